"""Training, data and metrics for EoMT: losses, mask annealing, the trainer, data sets, metrics, inference on image
files and the `eomt` command (`training.commands`).

The main classes are importable from here (`from training import EoMTTrainer`); they load on first use, so that
`import training.data` does not pull in `transformers.Trainer`.
"""

import importlib

_EXPORTS = {
    "HungarianMatcher": "modeling_eomt.loss_eomt",
    "MaskClassificationLoss": "modeling_eomt.loss_eomt",
    "MaskAnnealingCallback": "training.annealing",
    "MaskAnnealingSchedule": "training.annealing",
    "layer_decay_parameter_groups": "training.optim",
    "two_stage_warmup_poly_schedule": "training.optim",
    "EoMTDataCollator": "training.trainer",
    "EoMTTrainer": "training.trainer",
    "recipe_training_arguments": "training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
