"""Semantic segmentation: per-class scores summed over queries (sliding windows averaged), and their argmax computed
from a pass over the confident queries plus an exact point-wise repair where that pass cannot decide."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import Size, _check_outputs, _input_size, _size_list
from .geometry import _linear_taps, _merged_scores, _semantic_layout, _SemanticImage

# First pass: queries whose best class probability reaches this are upsampled; the others only bound the error.
# Classes whose total probability over queries reaches the second value are scored in the first pass.
_KEPT_CLASS_PROB = 0.01
_CANDIDATE_CLASS_SCORE = 0.05
# Above this fraction of uncertain pixels the exact full computation is cheaper than point-wise repair.
_MAX_REPAIR_FRACTION = 0.15


def semantic_probabilities(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> Tensor:
    """Per-class pixel scores `(B, K, h, w)`: sum over queries of P(class) (without "no object") x sigmoid(mask)."""
    class_probs = class_queries_logits.softmax(dim=-1)[..., :-1]  # (B, Q, K)
    mask_probs = masks_queries_logits.sigmoid()  # (B, Q, h, w)
    return torch.einsum("bqk,bqhw->bkhw", class_probs, mask_probs)


def _scores_at_pixels(image: _SemanticImage, probs: Tensor, logits: Tensor, input_size: Size, pixels: Tensor) -> Tensor:
    """Exact class scores `(M, K)` at target `pixels` `(M, 2)` (row, column) from all queries and classes, evaluated
    point by point: the same bilinear taps and weights as the full computation, for these pixels only."""
    device = probs.device
    (target_h, target_w), (canvas_h, canvas_w) = image.target, image.canvas
    rows = [tap[pixels[:, 0]] for tap in _linear_taps(target_h, canvas_h, device)]
    cols = [tap[pixels[:, 1]] for tap in _linear_taps(target_w, canvas_w, device)]
    corner_rows = torch.stack([rows[0], rows[0], rows[1], rows[1]], dim=1)  # (M, 4) canvas taps of each pixel
    corner_cols = torch.stack([cols[0], cols[1], cols[0], cols[1]], dim=1)
    corner_weights = torch.stack([rows[2] * cols[2], rows[2] * cols[3], rows[3] * cols[2], rows[3] * cols[3]], dim=1)
    keys, inverse = torch.unique(corner_rows * canvas_w + corner_cols, return_inverse=True)
    canvas_rows, canvas_cols = keys // canvas_w, keys % canvas_w

    mask_h, mask_w = logits.shape[-2:]
    row_taps, col_taps = _linear_taps(input_size[0], mask_h, device), _linear_taps(input_size[1], mask_w, device)
    total = probs.new_zeros((keys.shape[0], probs.shape[-1]))
    count = probs.new_zeros((keys.shape[0], 1))
    for view in image.views:
        inside = (
            (canvas_rows >= view.top) & (canvas_rows < view.top + view.height)
            & (canvas_cols >= view.left) & (canvas_cols < view.left + view.width)
        )
        y, x = canvas_rows[inside] - view.top, canvas_cols[inside] - view.left
        y0, y1, wy0, wy1 = (tap[y] for tap in row_taps)
        x0, x1, wx0, wx1 = (tap[x] for tap in col_taps)
        corners = torch.cat([y0 * mask_w + x0, y0 * mask_w + x1, y1 * mask_w + x0, y1 * mask_w + x1])
        weights = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1])  # (4, n)
        values = logits[view.output].flatten(1).index_select(1, corners).view(-1, 4, y.numel())  # (Q, 4, n)
        upsampled = (values * weights).sum(1)  # (Q, n)
        total[inside] += upsampled.sigmoid().T @ probs[view.output]
        count[inside] += 1
    canvas_scores = total / count.clamp(min=1)  # (U, K)
    return (canvas_scores[inverse] * corner_weights[..., None]).sum(1)


def _semantic_map(image: _SemanticImage, probs: Tensor, logits: Tensor, input_size: Size) -> Tensor:
    """Argmax of the exact class scores `(H, W)`, from a pass over the confident queries and likely classes plus an
    exact point-wise repair of the pixels that pass cannot decide (see docs/post_processing.md)."""
    outputs = [view.output for view in image.views]
    view_probs = probs[outputs]  # (V, Q, K)

    def exact_map() -> Tensor:
        return _merged_scores(image, list(view_probs), [logits[j] for j in outputs], input_size).max(0).indices

    kept = view_probs.amax(-1) >= _KEPT_CLASS_PROB  # (V, Q)
    class_bound = view_probs.sum(1).amax(0)  # (K,): no score of class c exceeds its total probability
    left_out = (view_probs * ~kept[..., None]).sum(1).amax(0)  # (K,): the most the left-out queries add to class c
    candidates = class_bound >= _CANDIDATE_CLASS_SCORE
    num_candidates = int(candidates.sum())
    if num_candidates == 0 or 2 * int(kept.sum(1).amax()) > probs.shape[1]:
        return exact_map()

    classes = candidates.nonzero()[:, 0]
    partial = _merged_scores(
        image,
        [view_probs[v][kept[v]][:, classes] for v in range(len(outputs))],
        [logits[j][kept[v]] for v, j in enumerate(outputs)],
        input_size,
    )  # (C, H, W) from the kept queries only
    best_score, best = partial.max(0)
    slack = 1e-4 * max(1.0, float(class_bound.max()))  # covers float32 rounding here and in the exact scores
    rivals = (partial + left_out[classes, None, None] >= (best_score - slack)).sum(0)  # classes that may still win
    uncertain = rivals > 1
    if num_candidates < class_bound.numel():  # a class left out of the pass could win where the best score is low
        uncertain |= best_score <= class_bound[~candidates].max() + slack
    pixels = uncertain.nonzero()  # (M, 2)
    if pixels.shape[0] > _MAX_REPAIR_FRACTION * uncertain.numel():
        return exact_map()
    segmentation = classes[best]
    if pixels.shape[0]:
        segmentation[pixels[:, 0], pixels[:, 1]] = _scores_at_pixels(image, probs, logits, input_size, pixels).argmax(1)
    return segmentation


def post_process_semantic(
    class_queries_logits: Tensor,
    masks_queries_logits: Tensor,
    target_sizes: Sequence[Size] | Tensor,
    input_size: Size | None = None,
    valid_sizes: Sequence[Size] | Tensor | None = None,
    patch_offsets: Sequence[Sequence[int] | Tensor] | None = None,
    resized_sizes: Sequence[Size] | Tensor | None = None,
    return_scores: bool = False,
) -> list[Tensor] | list[dict[str, Tensor]]:
    """Semantic segmentation maps `(H, W)` (class ids, `torch.long`), one per image.

    Args:
        class_queries_logits: `(N, Q, K + 1)` for N model outputs (images, or windows with `patch_offsets`).
        masks_queries_logits: `(N, Q, h, w)`.
        target_sizes: `(H, W)` per image, the size of the returned maps.
        input_size: `(H_in, W_in)` of the model input; default 4 x the mask logits.
        valid_sizes: per image, the top-left unpadded `(vh, vw)` of the input (without windows); default the input.
        patch_offsets: per output, `(image_index, start, end)` of its window along the longer side of the resized
            image (transformers' format); windows are averaged where they overlap.
        resized_sizes: per image, the size of the resized image the windows tile; default: inferred from the windows
            (long side = the last window end, short side = the input's, axis from the target's longer side).
        return_scores: also return the class scores `(K, H, W)`: each result is then
            `{"segmentation": (H, W), "segmentation_scores": (K, H, W)}`.
    """
    class_logits, mask_logits = _check_outputs(class_queries_logits, masks_queries_logits)
    input_size = _input_size(input_size, mask_logits)
    count = len(target_sizes) if target_sizes is not None else 0
    targets = _size_list("target_sizes", target_sizes, count, "image")
    if not targets:
        raise ValueError("target_sizes is empty: there is no image to post-process")
    images = _semantic_layout(class_logits.shape[0], targets, input_size, valid_sizes, patch_offsets, resized_sizes)
    probs = class_logits.softmax(dim=-1)[..., :-1]  # (N, Q, K)

    results = []
    for image in images:
        if return_scores:
            outputs = [view.output for view in image.views]
            scores = _merged_scores(image, list(probs[outputs]), list(mask_logits[outputs]), input_size)
            results.append({"segmentation": scores.max(0).indices, "segmentation_scores": scores})
        else:
            results.append(_semantic_map(image, probs, mask_logits, input_size))
    return results


def semantic_segmentation(
    class_queries_logits: Tensor, masks_queries_logits: Tensor, target_size: Size | None = None
) -> Tensor:
    """Class index per pixel `(B, H, W)` for unpadded inputs, the mask logits resized bilinearly to `target_size`
    (default: their own size)."""
    size = tuple(masks_queries_logits.shape[-2:]) if target_size is None else tuple(target_size)
    maps = post_process_semantic(
        class_queries_logits, masks_queries_logits, [size] * class_queries_logits.shape[0], input_size=size
    )
    return torch.stack(maps)
