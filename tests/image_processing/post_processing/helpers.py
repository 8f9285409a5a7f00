"""What the post-processing tests share: realistic synthetic outputs of a 192-pixel input and transformers' processor
with the same geometry."""

from types import SimpleNamespace

from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

from benchmarks.inputs import synthetic_outputs

INPUT = 192  # model input side; mask logits are 48 x 48
QUERIES, CLASSES = 60, 20
TARGETS = [(144, 192), (250, 170)]  # landscape (padded at the bottom) and portrait (padded at the right), upscaled


def outputs_for(class_logits, mask_logits, patch_offsets=None):
    return SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=patch_offsets)


def padded_processor():
    return EomtImageProcessorPil(size={"shortest_edge": INPUT, "longest_edge": INPUT}, do_pad=True)


def valid_sizes(targets):
    """The unpadded part of the square input, as transformers' longest-side resize computes it."""
    return [get_size_with_aspect_ratio(target, INPUT, INPUT) for target in targets]


def realistic(batch=2, seed=0, class_pool=None):
    return synthetic_outputs(batch, QUERIES, CLASSES, (INPUT // 4, INPUT // 4), (4, 12), class_pool=class_pool, seed=seed)
