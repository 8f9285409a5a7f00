"""The training loss, re-exported: it lives with the model, in `modeling_eomt.loss_eomt`, because
`EoMTForUniversalSegmentation.forward` computes it from labels (transformers' way) and its remote-code copy must too."""

from modeling_eomt.loss_eomt import (
    BatchTargets,
    HungarianMatcher,
    MaskClassificationLoss,
    RandomPoints,
    auto_num_points,
    check_targets,
    sample_points,
)

__all__ = [
    "BatchTargets",
    "HungarianMatcher",
    "MaskClassificationLoss",
    "RandomPoints",
    "auto_num_points",
    "check_targets",
    "sample_points",
]
