"""Instance segmentation: a query's mask is its logits > 0, scored by its best class probability x the mean mask
probability inside the mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .checks import Size, _check_thresholds, _segments_info, _whole_images
from .geometry import undo_padding_and_resize


def instance_map(masks: Tensor) -> Tensor:
    """Instance id per pixel `(H, W)` long from binary masks `(I, H, W)`: the last instance covering a pixel (later
    queries paint over earlier ones), -1 where none does."""
    if masks.shape[0] == 0:
        return torch.full(masks.shape[1:], -1, dtype=torch.long, device=masks.device)
    dtype = torch.uint8 if masks.shape[0] < 255 else torch.int32
    order = torch.arange(1, masks.shape[0] + 1, device=masks.device, dtype=dtype)[:, None, None]
    return (masks * order).amax(0).long() - 1


def _instance_segments(
    mask_logits: Tensor, class_scores: Tensor, labels: Tensor, threshold: float, return_binary_maps: bool
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Instances from the candidate queries' mask logits `(N, H, W)`: mask = logits > 0, score = class score x mean
    mask probability over the mask; kept if the mask is not empty and the score reaches `threshold`."""
    masks = mask_logits > 0  # (N, H, W)
    flat_masks = masks.flatten(1)
    # transformers' mean of sigmoid(logits) x float(mask): the same values, summed in the same order
    mask_probs = mask_logits.flatten(1).sigmoid().masked_fill_(~flat_masks, 0.0)
    mask_area = flat_masks.sum(1, dtype=torch.int32)  # exact, so equal to transformers' float32 sum
    mask_scores = mask_probs.sum(1) / (mask_area.float() + 1e-6)
    scores = class_scores * mask_scores
    kept = ((mask_area > 0) & (scores >= threshold)).nonzero()[:, 0]
    kept_masks = masks[kept]  # (I, H, W)
    segmentation = kept_masks if return_binary_maps else instance_map(kept_masks)
    return segmentation, _segments_info(torch.arange(kept.numel()), labels[kept], scores[kept])


def post_process_instance(
    class_queries_logits: Tensor,
    masks_queries_logits: Tensor,
    target_sizes: Sequence[Size] | Tensor,
    input_size: Size | None = None,
    valid_sizes: Sequence[Size] | Tensor | None = None,
    threshold: float = 0.8,
    return_binary_maps: bool = False,
) -> list[dict[str, Any]]:
    """Instance segmentation per image: `{"segmentation": (H, W) long, "segments_info": [{"id", "label_id",
    "score"}]}`, instance ids from 0 in query order, -1 where no instance is (overlaps go to the later instance).

    An instance is a query's mask (logits > 0) scored by its best real class probability x the mean mask
    probability inside the mask; those scoring at least `threshold` are kept. With `return_binary_maps`,
    `"segmentation"` is instead the `(I, H, W)` boolean masks of the instances, overlaps included (for metrics).
    """
    _check_thresholds(threshold=threshold)
    class_logits, mask_logits, input_size, targets, valid = _whole_images(
        class_queries_logits, masks_queries_logits, target_sizes, input_size, valid_sizes
    )
    class_scores, labels = class_logits.softmax(dim=-1)[..., :-1].max(-1)  # (B, Q), best real class
    candidates = class_scores >= threshold  # the final score never exceeds the class score
    results = []
    for i in range(class_logits.shape[0]):
        kept = candidates[i].nonzero()[:, 0]
        logits = undo_padding_and_resize(mask_logits[i, kept], input_size, valid[i], targets[i])
        segmentation, segments = _instance_segments(logits, class_scores[i, kept], labels[i, kept], threshold, return_binary_maps)
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results
