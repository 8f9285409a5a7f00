"""Pixels in, segmentations out: pre-processing, target encoding, post-processing and visualisation for EoMT."""

from .post_processing import (
    post_process_instance,
    post_process_panoptic,
    post_process_semantic,
    semantic_probabilities,
    semantic_segmentation,
    undo_padding_and_resize,
)
from .targets import MaskTarget, id_to_rgb, instance_target, panoptic_target, rgb_to_id, semantic_target
from .visualization import color_palette, draw_segmentation

__all__ = [
    "MaskTarget",
    "color_palette",
    "draw_segmentation",
    "id_to_rgb",
    "instance_target",
    "panoptic_target",
    "post_process_instance",
    "post_process_panoptic",
    "post_process_semantic",
    "rgb_to_id",
    "semantic_probabilities",
    "semantic_segmentation",
    "semantic_target",
    "undo_padding_and_resize",
]
