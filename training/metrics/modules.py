"""Loading the metrics as `evaluate` modules from this package's files (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EVALUATE_MODULES_DIR = Path(__file__).parent / "evaluate_modules"
EVALUATE_MODULES = ("panoptic_quality", "mask_ap", "mean_iou")


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` of the local module `name` (one of `EVALUATE_MODULES`); `kwargs` go to `evaluate.load`."""
    import evaluate

    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown metric {name!r}, expected one of {EVALUATE_MODULES}")
    return evaluate.load(str(EVALUATE_MODULES_DIR / name), **kwargs)
