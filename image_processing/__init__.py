"""Pixels in, segmentations out: pre-processing, target encoding, post-processing and visualisation for EoMT."""

from .post_processing import semantic_probabilities, semantic_segmentation
from .targets import MaskTarget, id_to_rgb, instance_target, panoptic_target, rgb_to_id, semantic_target
from .visualization import color_palette, draw_segmentation

__all__ = [
    "MaskTarget",
    "color_palette",
    "draw_segmentation",
    "id_to_rgb",
    "instance_target",
    "panoptic_target",
    "rgb_to_id",
    "semantic_probabilities",
    "semantic_segmentation",
    "semantic_target",
]
