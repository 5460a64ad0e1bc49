"""Ray-free reporting of a search's results: tables, figures, lineage, held-out numbers and the HTML page."""
