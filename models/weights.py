"""Reading weight files safely: torch.load(weights_only=True) and, when it refuses, why in one sentence.

The model layer needs it (a classifier's pretrained weights: models/dual.py) and so does the engine (its
checkpoints: echotune/engine/checkpoint.py); it lives here, at the bottom, so the engine imports it downwards.
"""

from __future__ import annotations

import os
import pickle


def load_error_reason(path: str | os.PathLike, exc: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in one sentence; without torch's advice to retry with
    weights_only=False (that advice is how a tampered file would run its code)."""
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = [
        line
        for line in lines
        if not line.startswith(
            ("Weights only load failed", "Check the documentation", "Please file an issue", "WeightsUnpickler error")
        )
    ]
    if isinstance(exc, pickle.UnpicklingError) and (is_zip or any("GLOBAL" in line for line in detail)):
        return f"it holds pickled objects beyond tensors and plain containers, refused ({' '.join(detail)[:300]})"
    if not is_zip:
        return "not a PyTorch checkpoint (truncated, damaged or another format: no zip archive)"
    return (detail or lines or [type(exc).__name__])[-1][:300]
