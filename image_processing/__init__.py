"""Pixels in, segmentations out: pre-processing, target encoding, post-processing and visualisation for EoMT."""

from .image_processing_eomt import EoMTImageProcessor
from .inputs import to_rgb_array
from .post_processing import (
    instance_map,
    post_process_instance,
    post_process_panoptic,
    post_process_semantic,
    semantic_probabilities,
    semantic_segmentation,
    undo_padding_and_resize,
)
from .targets import MaskTarget, id_to_rgb, instance_target, panoptic_target, rgb_to_id, semantic_target
from .visualization import color_palette, draw_result, draw_segmentation

__all__ = [
    "EoMTImageProcessor",
    "MaskTarget",
    "color_palette",
    "draw_result",
    "draw_segmentation",
    "id_to_rgb",
    "instance_map",
    "instance_target",
    "panoptic_target",
    "post_process_instance",
    "post_process_panoptic",
    "post_process_semantic",
    "rgb_to_id",
    "semantic_probabilities",
    "semantic_segmentation",
    "semantic_target",
    "to_rgb_array",
    "undo_padding_and_resize",
]
