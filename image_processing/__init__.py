"""Pixels in, segmentations out: pre-processing, post-processing and visualisation for EoMT."""

from .post_processing import semantic_probabilities, semantic_segmentation
from .visualization import color_palette, draw_segmentation

__all__ = ["color_palette", "draw_segmentation", "semantic_probabilities", "semantic_segmentation"]
