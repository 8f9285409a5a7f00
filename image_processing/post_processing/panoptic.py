"""Panoptic segmentation: each pixel goes to the query with the highest score x mask probability, segments are kept
by area and fused per stuff class; whole blocks of pixels are settled from bounds on the low-resolution logits."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .checks import Size, _check_thresholds, _class_id_tensor, _segments_info, _whole_images
from .geometry import _linear_taps, undo_padding_and_resize

# Blocks span this many low-resolution cells per side (larger: fewer, cheaper blocks, more pixels to decide).
_BLOCK_CELLS = 2


def _float32_above(value: float) -> float:
    """The smallest float32 strictly greater than `value`: `x > value` (in float64) iff `x >= _float32_above(value)`
    for float32 `x`, a comparison that stays in float32."""
    candidate = torch.tensor(value, dtype=torch.float32)
    if float(candidate) <= value:
        candidate = torch.nextafter(candidate, torch.tensor(float("inf")))
    return float(candidate)


def _block_spans(out_len: int, valid_len: int, input_len: int, low_len: int, block: int, device: torch.device) -> tuple[Tensor, int]:
    """Along one axis, for blocks of `block` output pixels: the first low-resolution index each block reads through
    `undo_padding_and_resize` (with torch's own bilinear taps) and the longest span read by any block."""
    if out_len == valid_len:
        first = last = torch.arange(out_len, device=device)
    else:
        first, last = _linear_taps(out_len, valid_len, device)[:2]
    up_first, up_last = _linear_taps(input_len, low_len, device)[:2]
    first, last = up_first[first], up_last[last]  # (out_len,) low-resolution indices read by each output index
    starts = torch.arange(0, out_len, block, device=device)
    block_first = first[starts]
    block_last = last[(starts + block - 1).clamp(max=out_len - 1)]
    span = int((block_last - block_first).max()) + 1
    return block_first.clamp(max=low_len - span), span


@dataclass(frozen=True)
class _BlockGrid:
    """Square blocks of `size` pixels tiling a `height x width` output map, and the window of low-resolution mask
    logits each block reads (`undo_padding_and_resize` is bilinear, so every output logit lies between the minimum
    and the maximum of that window, up to float rounding)."""

    size: int
    height: int
    width: int
    row_starts: Tensor  # (BY,)
    col_starts: Tensor  # (BX,)
    row_span: int
    col_span: int

    def bounds(self, low_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Minimum and maximum `(N, BY, BX)` of the low-resolution logits `(N, h, w)` each block reads."""
        windows = low_logits.unfold(1, self.row_span, 1)  # (N, h - span + 1, w, span), a view
        bounds = []
        for reduce in (torch.amin, torch.amax):
            rows = reduce(windows, dim=-1)[:, self.row_starts]  # (N, BY, w)
            bounds.append(reduce(rows.unfold(2, self.col_span, 1), dim=-1)[:, :, self.col_starts])
        return bounds[0], bounds[1]

    def areas(self) -> Tensor:
        """Pixels per block `(BY, BX)` (edge blocks may be smaller)."""
        device = self.row_starts.device
        rows = (self.height - torch.arange(self.row_starts.numel(), device=device) * self.size).clamp(max=self.size)
        cols = (self.width - torch.arange(self.col_starts.numel(), device=device) * self.size).clamp(max=self.size)
        return rows[:, None] * cols[None, :]

    def pixels(self, blocks: Tensor) -> Tensor:
        """Flat indices into the `(H, W)` map of the pixels of `blocks` `(M, 2)` (block row, block column)."""
        offsets = torch.arange(self.size, device=blocks.device)
        rows, cols = blocks[:, :1] * self.size + offsets, blocks[:, 1:] * self.size + offsets  # (M, size)
        inside = (rows < self.height)[:, :, None] & (cols < self.width)[:, None, :]
        return (rows[:, :, None] * self.width + cols[:, None, :])[inside]

    def expand(self, per_block: Tensor) -> Tensor:
        """A `(BY, BX)` map repeated over the pixels of each block: `(H, W)`."""
        device = per_block.device
        rows = torch.arange(self.height, device=device) // self.size
        cols = torch.arange(self.width, device=device) // self.size
        return per_block[rows[:, None], cols[None, :]]


@functools.lru_cache(maxsize=64)
def _block_grid(mask_size: Size, input_size: Size, valid_size: Size, target_size: Size, device: torch.device) -> _BlockGrid:
    """The blocks of a `target_size` map whose logits come from `mask_size` logits through `undo_padding_and_resize`
    (cached: the geometry repeats from image to image)."""
    cell = target_size[0] * input_size[0] / (valid_size[0] * mask_size[0])  # output pixels per low-res row
    size = max(2, min(32, round(cell * _BLOCK_CELLS)))
    rows, row_span = _block_spans(target_size[0], valid_size[0], input_size[0], mask_size[0], size, device)
    cols, col_span = _block_spans(target_size[1], valid_size[1], input_size[1], mask_size[1], size, device)
    return _BlockGrid(size, target_size[0], target_size[1], rows, cols, row_span, col_span)


def _panoptic_segments(
    mask_logits: Tensor,
    grid: _BlockGrid,
    low_logits: Tensor,
    scores: Tensor,
    labels: Tensor,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    stuff_classes: Tensor,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Segment map `(H, W)` and segments from the kept queries' mask logits `(N, H, W)` (and the `(N, h, w)`
    low-resolution logits they come from), scores and labels `(N,)`.

    Each pixel goes to the query with the highest score x mask probability; a query makes a segment if the pixels
    it wins are not empty, it has pixels with probability >= `mask_threshold` among them, and it wins more than
    `overlap_mask_area_threshold` of its own mask. Queries of a stuff class join the first segment of their class.

    Pixels are decided block by block: where the logit bounds of `grid` already fix the winner and every query's
    side of `mask_threshold`, the block is settled without touching its pixels; the other blocks are computed
    pixel by pixel from `mask_logits`, with exactly the operations transformers applies to the whole map.
    """
    num = scores.shape[0]
    queries = torch.arange(num, device=scores.device)

    # block level: (N, BY, BX) bounds of probabilities and weighted probabilities
    low, high = grid.bounds(low_logits)
    # the output logits differ from the convex combinations bounded here by float32 rounding (< 1e-6 of the largest
    # logit), which moves sigmoid(logit) by < 1e-3 relative while logits stay below 500; 1e-30 covers underflow
    prob_low, prob_high = low.sigmoid().mul_(1 - 1e-3).sub_(1e-30), high.sigmoid().mul_(1 + 1e-3).add_(1e-30)
    surely_in, surely_out = prob_low >= mask_threshold, prob_high < mask_threshold
    best_low, block_winner = (scores[:, None, None] * prob_low).max(0)  # (BY, BX)
    # the winner is certain where no other query's upper bound reaches its lower bound
    contenders = (scores[:, None, None] * prob_high >= best_low).sum(0)
    settled = (contenders == 1) & (surely_in | surely_out).all(0)
    settled &= low_logits.abs().amax() < 500
    block_code = block_winner + num * surely_in.gather(0, block_winner[None])[0]  # winner, + N if in its mask

    # pixel level, in the blocks not settled: (N, M)
    pixels = grid.pixels((~settled).nonzero())
    mask_probs = mask_logits.flatten(1).index_select(1, pixels).sigmoid_()
    in_mask = mask_probs >= mask_threshold
    winner = (scores[:, None] * mask_probs).max(0).indices  # (M,) the first maximum, as argmax
    pixel_code = winner + num * in_mask.gather(0, winner[None])[0]

    areas = grid.areas()
    mask_area = in_mask.sum(1, dtype=torch.int32).long() + (surely_in & settled).mul(areas).flatten(1).sum(1)
    code_area = torch.bincount(pixel_code, minlength=2 * num).scatter_add_(0, block_code[settled], areas[settled])
    kept_area = code_area[num:]  # pixels won with probability >= mask_threshold
    won_area = code_area[:num] + kept_area
    ratio = won_area / mask_area  # float32, as transformers computes it, which then compares it in float64
    large_enough = ratio >= _float32_above(overlap_mask_area_threshold)
    valid = (won_area > 0) & (mask_area > 0) & (kept_area > 0) & large_enough

    fusable = valid & torch.isin(labels, stuff_classes)
    same_stuff = (labels[:, None] == labels[None, :]) & fusable[None, :]  # (N, N)
    first = torch.where(fusable, same_stuff.int().argmax(1), queries)  # first valid query of the same stuff class
    opens = valid & (first == queries)  # queries that start a new segment
    segment_ids = opens.cumsum(0) - 1
    lookup = torch.where(valid, segment_ids[first], -1)  # query -> segment id
    code_to_segment = torch.cat([torch.full_like(lookup, -1), lookup])  # outside the mask -> -1
    segmentation = grid.expand(code_to_segment[block_code])
    segmentation.view(-1)[pixels] = code_to_segment[pixel_code]

    return segmentation, _segments_info(segment_ids[opens], labels[opens], scores[opens])


def post_process_panoptic(
    class_queries_logits: Tensor,
    masks_queries_logits: Tensor,
    target_sizes: Sequence[Size] | Tensor,
    input_size: Size | None = None,
    valid_sizes: Sequence[Size] | Tensor | None = None,
    threshold: float = 0.8,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    stuff_classes: Sequence[int] | None = None,
    label_ids_to_fuse: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Panoptic segmentation per image: `{"segmentation": (H, W) long, "segments_info": [{"id", "label_id",
    "score"}]}`, segment ids from 0 in query order, -1 where no segment is.

    Queries whose best class is "no object" or whose class probability is not above `threshold` are dropped.
    `stuff_classes` (or Mask2Former's name, `label_ids_to_fuse`) lists the classes whose segments are fused into one
    per image. `input_size` / `valid_sizes` as in `post_process_semantic`.
    """
    if stuff_classes is not None and label_ids_to_fuse is not None and set(stuff_classes) != set(label_ids_to_fuse):
        raise ValueError(f"stuff_classes {list(stuff_classes)} and label_ids_to_fuse {list(label_ids_to_fuse)} disagree; pass one")
    _check_thresholds(
        threshold=threshold, mask_threshold=mask_threshold, overlap_mask_area_threshold=overlap_mask_area_threshold
    )
    class_logits, mask_logits, input_size, targets, valid = _whole_images(
        class_queries_logits, masks_queries_logits, target_sizes, input_size, valid_sizes
    )
    batch, num_labels = class_logits.shape[0], class_logits.shape[-1] - 1
    stuff = stuff_classes if stuff_classes is not None else label_ids_to_fuse
    stuff_ids = _class_id_tensor("stuff_classes" if stuff_classes is not None else "label_ids_to_fuse", stuff, num_labels, class_logits.device)

    scores, labels = class_logits.softmax(dim=-1).max(-1)  # (B, Q), over all classes including "no object"
    keep = labels.ne(num_labels) & (scores > threshold)
    results = []
    for i in range(batch):
        kept = keep[i].nonzero()[:, 0]
        if kept.numel() == 0:
            empty = torch.full(targets[i], -1, dtype=torch.long, device=class_logits.device)
            results.append({"segmentation": empty, "segments_info": []})
            continue
        low_logits = mask_logits[i, kept]
        logits = undo_padding_and_resize(low_logits, input_size, valid[i], targets[i])
        grid = _block_grid(tuple(low_logits.shape[-2:]), input_size, valid[i], targets[i], low_logits.device)
        segmentation, segments = _panoptic_segments(
            logits, grid, low_logits, scores[i, kept], labels[i, kept], mask_threshold, overlap_mask_area_threshold, stuff_ids
        )
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results
