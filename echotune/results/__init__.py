"""A search's results on disk, without Ray: file names (layout), the leaderboard's schema (leaderboard), the JSON
documents beside Ray's files (documents, search_record)."""
