"""EoMT's class and mask logits to semantic, instance and panoptic segmentations: vectorised torch functions on the
device of the outputs, equal to transformers' `EomtImageProcessor` post-processing where its geometry applies (the
design, the geometry and the deliberate differences: docs/post_processing.md)."""

from .geometry import resize_bilinear, undo_padding_and_resize, upsample_and_crop
from .instance import instance_map, post_process_instance
from .panoptic import post_process_panoptic
from .semantic import post_process_semantic, semantic_probabilities, semantic_segmentation

__all__ = [
    "instance_map",
    "post_process_instance",
    "post_process_panoptic",
    "post_process_semantic",
    "resize_bilinear",
    "semantic_probabilities",
    "semantic_segmentation",
    "undo_padding_and_resize",
    "upsample_and_crop",
]
