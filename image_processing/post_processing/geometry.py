"""The one place where mask logits go back to the original image: upsampling to the model input, removing the
padding, resizing to the target size, and merging sliding windows (the geometry is set out in
docs/post_processing.md)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import Size, _size_list, _valid_sizes


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
    """The model outputs (views) of one image, the resized image they tile and the size of the result."""

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
