"""Turning EoMT's per-query class and mask logits into semantic, instance and panoptic segmentations.

Pure, vectorised torch functions that run on the device of the outputs. Inputs are the model's
`class_queries_logits (B, Q, K + 1)` ("no object" last) and `masks_queries_logits (B, Q, h, w)`, plus the geometry
of the pre-processing, which is undone in one place (`upsample_and_crop`, `resize_bilinear`,
`undo_padding_and_resize`):

* the model input has size `input_size = (H_in, W_in)`; the mask logits are bilinearly upsampled to it;
* image `i` occupies the top-left `valid_sizes[i] = (vh, vw)` of the input (padding is bottom/right), which is
  cropped and bilinearly resized to the original `target_sizes[i] = (H, W)`;
* semantic sliding windows: `patch_offsets[j] = (image_index, start, end)` places output `j` (a full input-size
  window) at `start` along the longer side of the shortest-side-resized image of size `resized_sizes[i]`;
  overlapping windows are averaged and the merged scores are resized to the target size.

The results equal those of transformers' `EomtImageProcessor` post-processing on the same outputs (same
segments, labels, scores rounded to 6 decimals, pixel maps) when transformers' geometry applies (square
`input_size`, padded inputs for panoptic/instance). Deliberate differences:

* geometry: transformers upsamples every mask to its square `size` and crops `get_size_with_aspect_ratio(...)`,
  which is wrong for non-square inputs (`do_pad=False`) and, for semantic segmentation without windows, never
  removes padding. Here the input size and valid region are explicit.
* speed without changing the result. Panoptic and instance segmentation drop the queries that cannot yield a
  segment (no object, class score below `threshold`) before upsampling, which is exact as every later step is per
  query or only involves kept queries. Panoptic segmentation then settles whole blocks of pixels from bounds on
  the logits (`_BlockGrid`: the minimum and maximum of the low-resolution logits a block reads) where they fix
  the winning query and each query's side of `mask_threshold`; the remaining blocks (along mask edges) are
  computed pixel by pixel with transformers' operations, so maps, areas and segments are identical. Semantic
  segmentation first scores only the queries whose best class probability reaches `_KEPT_CLASS_PROB` and the
  classes whose total probability reaches `_CANDIDATE_CLASS_SCORE`; the largest possible contribution of the rest
  bounds the error of that pass, and the pixels whose class it leaves uncertain (along class boundaries) are
  recomputed exactly, point by point, from all queries and classes. The map is thus the argmax of the exact
  scores and can differ from transformers' only where two classes tie within float32 rounding (none in the
  tests). With `return_scores=True` all scores are computed in full.
* sliding windows are merged from explicit `patch_offsets` and `resized_sizes` (transformers re-derives the
  resized size from `target_sizes` and its own `size`).
* maps are always `torch.long`; empty results give a map of `-1` (transformers returns float maps for instance
  segmentation and for empty panoptic results).
* logits in bf16/fp16 are upcast to float32 first (transformers would compute in the low precision).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Size = tuple[int, int]

# Semantic first pass: queries whose best class probability reaches this are upsampled; the others only bound the
# error. Classes whose total probability over queries reaches the second value are scored in the first pass.
_KEPT_CLASS_PROB = 0.01
_CANDIDATE_CLASS_SCORE = 0.05
# Above this fraction of uncertain pixels the exact full computation is cheaper than point-wise repair.
_MAX_REPAIR_FRACTION = 0.15
# Panoptic blocks span this many low-resolution cells per side (larger: fewer, cheaper blocks, more pixels to decide).
_BLOCK_CELLS = 2


# --------------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------------


def _check_outputs(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and return both logits as float32 (bf16/fp16 are upcast)."""
    if not isinstance(class_queries_logits, Tensor) or class_queries_logits.ndim != 3:
        got = tuple(class_queries_logits.shape) if isinstance(class_queries_logits, Tensor) else type(class_queries_logits).__name__
        raise ValueError(f"class_queries_logits must be a (batch, queries, classes + 1) tensor, got {got}")
    if not isinstance(masks_queries_logits, Tensor) or masks_queries_logits.ndim != 4:
        got = tuple(masks_queries_logits.shape) if isinstance(masks_queries_logits, Tensor) else type(masks_queries_logits).__name__
        raise ValueError(f"masks_queries_logits must be a (batch, queries, height, width) tensor, got {got}")
    if class_queries_logits.shape[:2] != masks_queries_logits.shape[:2]:
        raise ValueError(
            f"class_queries_logits {tuple(class_queries_logits.shape)} and masks_queries_logits "
            f"{tuple(masks_queries_logits.shape)} disagree on (batch, queries)"
        )
    if class_queries_logits.shape[-1] < 2:
        raise ValueError(f"class_queries_logits needs at least one class plus 'no object', got {class_queries_logits.shape[-1]}")
    if masks_queries_logits.shape[-1] == 0 or masks_queries_logits.shape[-2] == 0:
        raise ValueError(f"masks_queries_logits has an empty spatial size {tuple(masks_queries_logits.shape[-2:])}")
    if class_queries_logits.device != masks_queries_logits.device:
        raise ValueError(f"logits live on different devices: {class_queries_logits.device} and {masks_queries_logits.device}")
    return class_queries_logits.float(), masks_queries_logits.float()


def _to_size(name: str, size: Any) -> Size:
    values = size.tolist() if isinstance(size, Tensor) else size
    try:
        height, width = (int(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0 or (height, width) != tuple(values):
        raise ValueError(f"{name} must be two positive integers (height, width), got {tuple(values)}")
    return height, width


def _size_list(name: str, sizes: Any, count: int, what: str) -> list[Size]:
    if isinstance(sizes, Tensor):
        sizes = sizes.tolist()
    if sizes is None or len(sizes) != count:
        got = "None" if sizes is None else f"{len(sizes)} entries"
        raise ValueError(f"{name} needs one (height, width) per {what} ({count}), got {got}")
    return [_to_size(f"{name}[{index}]", size) for index, size in enumerate(sizes)]


def _input_size(input_size: Any, masks_queries_logits: Tensor) -> Size:
    """Defaults to 4x the mask logits, EoMT's mask resolution for patch size 16."""
    if input_size is None:
        return 4 * masks_queries_logits.shape[-2], 4 * masks_queries_logits.shape[-1]
    return _to_size("input_size", input_size)


def _valid_sizes(valid_sizes: Any, count: int, input_size: Size) -> list[Size]:
    if valid_sizes is None:
        return [input_size] * count
    sizes = _size_list("valid_sizes", valid_sizes, count, "image")
    for index, (height, width) in enumerate(sizes):
        if height > input_size[0] or width > input_size[1]:
            raise ValueError(f"valid_sizes[{index}] = {(height, width)} exceeds input_size {input_size}")
    return sizes


def _whole_images(
    class_queries_logits: Tensor, masks_queries_logits: Tensor, target_sizes: Any, input_size: Any, valid_sizes: Any
) -> tuple[Tensor, Tensor, Size, list[Size], list[Size]]:
    """Checked float32 logits, input size, target and valid sizes of outputs that hold one whole image each."""
    class_logits, mask_logits = _check_outputs(class_queries_logits, masks_queries_logits)
    input_size = _input_size(input_size, mask_logits)
    targets = _size_list("target_sizes", target_sizes, class_logits.shape[0], "image")
    return class_logits, mask_logits, input_size, targets, _valid_sizes(valid_sizes, class_logits.shape[0], input_size)


def _segments_info(ids: Tensor, label_ids: Tensor, scores: Tensor) -> list[dict[str, Any]]:
    """transformers' `segments_info`: scores rounded to 6 decimals (one device sync for all segments)."""
    return [
        {"id": segment_id, "label_id": label_id, "score": round(score, 6)}
        for segment_id, label_id, score in zip(ids.tolist(), label_ids.tolist(), scores.tolist())
    ]


def _class_id_tensor(name: str, class_ids: Sequence[int] | None, num_classes: int, device: torch.device) -> Tensor:
    ids = torch.as_tensor(list(class_ids) if class_ids is not None else [], dtype=torch.long)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.numel():
        raise ValueError(f"{name} contains {bad.tolist()}, outside the {num_classes} classes of the outputs (0..{num_classes - 1})")
    return ids.to(device)


# --------------------------------------------------------------------------------------------------------------------
# Geometry: the one place where logits go back to the original image
# --------------------------------------------------------------------------------------------------------------------


def resize_bilinear(maps: Tensor, size: Size) -> Tensor:
    """`(N, h, w)` maps resized bilinearly (align_corners=False) to `size`; returned as is when already that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[0] == 0:
        return maps.new_empty((0, *size))
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def _rows_needed(valid: int, factor: int, available: int) -> int:
    """Low-resolution rows read by the first `valid` rows of a bilinear `factor`x upsampling (align_corners=False)."""
    last_source = max((valid - 0.5) / factor - 0.5, 0.0)  # source coordinate of the last output row
    return min(available, int(last_source) + 2)


def upsample_and_crop(mask_logits: Tensor, input_size: Size, valid_size: Size) -> Tensor:
    """Mask logits `(N, h, w)` upsampled bilinearly to `input_size`, then cropped to the top-left `valid_size`.

    When the upsampling factor is a power of two (EoMT: 4), only the valid region is computed, from the
    low-resolution rows and columns it reads, with the same scale: bit-identical to upsampling everything and
    cropping afterwards when one side is kept whole (the processor's longest-side resize + padding), equal up to
    float32 rounding (aten picks another kernel for some small outputs) when both sides are cropped.
    """
    (in_h, in_w), (valid_h, valid_w) = input_size, valid_size
    height, width = mask_logits.shape[-2:]
    if mask_logits.shape[0] == 0:
        return mask_logits.new_empty((0, valid_h, valid_w))
    factor_h, factor_w = in_h // height, in_w // width
    exact_factors = all(f * s == t and f & (f - 1) == 0 for f, s, t in ((factor_h, height, in_h), (factor_w, width, in_w)))
    if exact_factors:
        rows, cols = _rows_needed(valid_h, factor_h, height), _rows_needed(valid_w, factor_w, width)
        # aten copies the input unchanged when its size equals the output size, whatever the scale: read one more
        # (unused) low-resolution row / column so that sizes never coincide
        rows += int(rows == valid_h and factor_h > 1)
        cols += int(cols == valid_w and factor_w > 1)
        if rows <= height and cols <= width:
            source = mask_logits[None, :, :rows, :cols]
            # the aten op takes the output size and the scale separately (F.interpolate accepts only one of them)
            return torch.ops.aten.upsample_bilinear2d(source, [valid_h, valid_w], False, float(factor_h), float(factor_w))[0]
    upsampled = F.interpolate(mask_logits[None], size=input_size, mode="bilinear", align_corners=False)[0]
    return upsampled[:, :valid_h, :valid_w]


def undo_padding_and_resize(mask_logits: Tensor, input_size: Size, valid_size: Size, target_size: Size) -> Tensor:
    """Mask logits `(N, h, w)` -> `(N, H, W)` at the original `target_size`: upsample to the model input, remove the
    bottom/right padding, resize (both bilinear, align_corners=False, as transformers does it)."""
    return resize_bilinear(upsample_and_crop(mask_logits, input_size, valid_size), target_size)


@functools.lru_cache(maxsize=64)
def _linear_taps(out_size: int, in_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For each output index of a bilinear resize `in_size -> out_size` (align_corners=False): the two source
    indices and their weights, computed as torch's kernel computes them (cached: read-only tensors)."""
    scale = float(torch.tensor(in_size / out_size, dtype=torch.float32))  # float32 ratio, as torch's kernel
    # torch computes scale * (i + 0.5) - 0.5 with one rounding (a fused multiply-add): exact in float64 (on the CPU,
    # as some accelerators lack float64), rounded once
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).float().clamp(min=0)
    index0 = source.long().clamp(max=in_size - 1)
    index1 = torch.where(index0 < in_size - 1, index0 + 1, index0)
    weight1 = (source - index0).clamp(0, 1)
    return index0.to(device), index1.to(device), (1 - weight1).to(device), weight1.to(device)


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


# --------------------------------------------------------------------------------------------------------------------
# Semantic segmentation
# --------------------------------------------------------------------------------------------------------------------


def semantic_probabilities(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> Tensor:
    """Per-class pixel scores `(B, K, h, w)`: sum over queries of P(class) (without "no object") x sigmoid(mask)."""
    class_probs = class_queries_logits.softmax(dim=-1)[..., :-1]  # (B, Q, K)
    mask_probs = masks_queries_logits.sigmoid()  # (B, Q, h, w)
    return torch.einsum("bqk,bqhw->bkhw", class_probs, mask_probs)


@dataclass(frozen=True)
class _View:
    """One model output of an image: its valid `height x width` input region sits at (`top`, `left`) in the canvas."""

    output: int
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class _SemanticImage:
    views: tuple[_View, ...]
    canvas: Size  # the (resized) image the views tile, each spanning it across
    target: Size
    axis: int = 0  # the axis along which the views follow each other


def _semantic_layout(
    num_outputs: int,
    target_sizes: list[Size],
    input_size: Size,
    valid_sizes: Any,
    patch_offsets: Any,
    resized_sizes: Any,
) -> list[_SemanticImage]:
    """Where each model output goes in its image, for plain inputs (one view per image) or sliding windows."""
    if patch_offsets is None:
        if len(target_sizes) != num_outputs:
            raise ValueError(f"target_sizes has {len(target_sizes)} entries but the outputs hold {num_outputs} images")
        valid = _valid_sizes(valid_sizes, num_outputs, input_size)
        return [_SemanticImage((_View(i, 0, 0, *valid[i]),), valid[i], target_sizes[i]) for i in range(num_outputs)]

    if valid_sizes is not None:
        raise ValueError("valid_sizes is for inputs without windows; with patch_offsets the windows are not padded")
    offsets = [offset.tolist() if isinstance(offset, Tensor) else list(offset) for offset in patch_offsets]
    if len(offsets) != num_outputs:
        raise ValueError(f"patch_offsets has {len(offsets)} windows but the outputs hold {num_outputs}")
    num_images = len(target_sizes)
    windows: list[list[tuple[int, int, int]]] = [[] for _ in range(num_images)]
    for j, offset in enumerate(offsets):
        if len(offset) != 3:
            raise ValueError(f"patch_offsets[{j}] must be (image_index, start, end), got {offset}")
        image, start, end = (int(value) for value in offset)
        if not 0 <= image < num_images:
            raise ValueError(f"patch_offsets[{j}] refers to image {image}, but target_sizes has {num_images} entries")
        windows[image].append((j, start, end))
    resized = None if resized_sizes is None else _size_list("resized_sizes", resized_sizes, num_images, "image")

    images = []
    for i, image_windows in enumerate(windows):
        if not image_windows:
            raise ValueError(f"image {i} has no window in patch_offsets")
        if resized is not None:
            canvas = resized[i]
            vertical = canvas[0] > canvas[1]
        else:  # as transformers: windows run along the longer side of the target; the other side is the input's
            vertical = target_sizes[i][0] > target_sizes[i][1]
            long_side = max(end for _, _, end in image_windows)
            canvas = (long_side, input_size[1]) if vertical else (input_size[0], long_side)
        views = _window_views(i, image_windows, canvas, vertical, input_size)
        images.append(_SemanticImage(views, canvas, target_sizes[i], axis=0 if vertical else 1))
    return images


def _window_views(image: int, windows: list[tuple[int, int, int]], canvas: Size, vertical: bool, input_size: Size) -> tuple[_View, ...]:
    """Views of one image's windows `(output, start, end)` along the longer side of its resized size `canvas`,
    checked to be input-sized and to cover the image."""
    axis = 0 if vertical else 1
    window, long_side, short_side = input_size[axis], canvas[axis], canvas[1 - axis]
    if short_side > input_size[1 - axis]:
        raise ValueError(f"image {image}'s resized size {canvas} is larger across than its windows ({input_size})")
    covered = 0
    for j, start, end in sorted(windows, key=lambda window_: window_[1]):
        if end - start != window or not 0 <= start < long_side:
            raise ValueError(
                f"patch_offsets[{j}] = ({image}, {start}, {end}) is not a {window}-pixel window inside image {image}'s "
                f"resized size {canvas}"
            )
        if start > covered:
            break
        covered = max(covered, end)
    if covered < long_side:
        raise ValueError(f"the windows of image {image} leave part of its resized size {canvas} uncovered (from {covered})")
    views = []
    for j, start, _ in windows:  # in the given order: overlapping windows are summed in that order
        top, left = (start, 0) if vertical else (0, start)
        views.append(_View(j, top, left, min(input_size[0], canvas[0] - top), min(input_size[1], canvas[1] - left)))
    return tuple(views)


def _merged_scores(image: _SemanticImage, probs: list[Tensor], logits: list[Tensor], input_size: Size) -> Tensor:
    """Class scores `(C, H, W)` at the target size, from per-view class probabilities `(Q_v, C)` and mask logits
    `(Q_v, h, w)`: sum_q P(c|q) sigmoid(mask_q) per view, averaged where views overlap, resized to the target."""
    scores = []
    for view, view_probs, view_logits in zip(image.views, probs, logits):
        mask_probs = upsample_and_crop(view_logits, input_size, (view.height, view.width)).sigmoid_()
        scores.append((view_probs.T @ mask_probs.flatten(1)).view(-1, view.height, view.width))  # (C, vh, vw)
    if len(scores) == 1 and tuple(scores[0].shape[1:]) == image.canvas:
        return resize_bilinear(scores[0], image.target)
    # sum and count per pixel, then average, as transformers' merge_image_patches; the windows span the canvas
    # across, so the count varies along one axis only
    regions = [(slice(None), slice(v.top, v.top + v.height), slice(v.left, v.left + v.width)) for v in image.views]
    count = torch.zeros(image.canvas[image.axis])  # windows per row (axis 0) or column (axis 1)
    for view in image.views:
        start, length = (view.top, view.height) if image.axis == 0 else (view.left, view.width)
        count[start : start + length] += 1
    total = scores[0].new_zeros((scores[0].shape[0], *image.canvas))
    for region, view_scores in zip(regions, scores):
        total[region] += view_scores
    count = count.to(total.device)
    return resize_bilinear(total.div_(count[:, None] if image.axis == 0 else count), image.target)


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
    exact point-wise repair of the pixels that pass cannot decide (see the module docstring)."""
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


# --------------------------------------------------------------------------------------------------------------------
# Panoptic segmentation
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Instance segmentation
# --------------------------------------------------------------------------------------------------------------------


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
