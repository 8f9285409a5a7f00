"""Blocks of target pixels for the semantic map, each reading a small window of the low-resolution mask logits.

Along each axis, the target indices are grouped into blocks that read the same low-resolution window (through the
bilinear upsampling to the input, the crop and the resize to the target of `geometry.py`), for each segment of the
axis a view covers (several only along the axis sliding windows follow). A block's class scores are then bounded by
the window's extreme logits, and the block's exact mask probabilities follow from the window by small matrices
with the same bilinear weights as torch's kernels (equal to the full computation up to float32 rounding).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import Size
from .geometry import _linear_taps, _SemanticImage


@dataclass(frozen=True)
class _AxisBlocks:
    """Blocks of consecutive target indices along one axis and, per segment `v` of the axis (a view's rows or
    columns in the canvas), the low-resolution window each block reads and the weights from that window.

    A target index `t` in block `b` gets, from segment `v`, `sum_c resize[v, b, t - starts[b], c] *
    sigmoid(sum_n upsample[v, b, c, n] * logits[windows[v, b] + n])` (window indices `n < span`, the block's canvas
    indices `c`), and the weights `resize[v, b, t - starts[b]]` sum to its share of segment `v`, which lies in
    `[share_min[v, b], share_max[v, b]]` (1 without overlapping views; 0 where the block does not read `v`)."""

    starts: Tensor  # (NB,) first target index of each block
    lengths: Tensor  # (NB,) target indices in each block (at most `length`)
    block_of: Tensor  # (T,) the block of each target index
    length: int
    span: int
    windows: Tensor  # (V, NB) first low-resolution index each block reads in each segment
    share_min: Tensor  # (V, NB)
    share_max: Tensor  # (V, NB)
    upsample: Tensor  # (V, NB, C, span)
    resize: Tensor  # (V, NB, length, C)
    identity: bool  # whether `resize` is the identity (one segment, target size = canvas size)


def _resize_taps(out_size: int, in_size: int) -> list[tuple[Tensor, Tensor]]:
    """The (index, weight) taps per output index of `resize_bilinear`: the pixel itself when the sizes agree (it
    then copies), else torch's two bilinear taps."""
    if out_size == in_size:
        return [(torch.arange(out_size), torch.ones(out_size))]
    index0, index1, weight0, weight1 = _linear_taps(out_size, in_size, torch.device("cpu"))
    return [(index0, weight0), (index1, weight1)]


@functools.lru_cache(maxsize=64)
def _axis_blocks(
    target_len: int, canvas_len: int, input_len: int, low_len: int, segments: tuple[tuple[int, int], ...], device: torch.device
) -> _AxisBlocks:
    """The blocks along one axis: `target_len` indices resized from a `canvas_len` canvas whose `segments`
    `(offset, length)` are views, each the first `length` indices of an `input_len` upsampling of `low_len` logits
    (cached: the geometry repeats from image to image)."""
    target_taps = _resize_taps(target_len, canvas_len)
    count = torch.zeros(canvas_len)  # views covering each canvas index, which the merge divides by
    for offset, length in segments:
        count[offset : offset + length] += 1
    node0, node1, node_weight0, node_weight1 = _linear_taps(input_len, low_len, torch.device("cpu"))
    last_node = torch.where(node_weight1 > 0, node1, node0)  # the last low-resolution index with weight

    num_segments = len(segments)
    first = torch.full((num_segments, target_len), low_len, dtype=torch.long)
    last = torch.full((num_segments, target_len), -1, dtype=torch.long)
    # per segment, (target index, canvas index, weight / count) of every tap with weight (a zero weight adds exactly
    # nothing, so the indices it points to are not read)
    reads: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in segments]
    for v, (offset, length) in enumerate(segments):
        for canvas, weight in target_taps:
            inside = (weight > 0) & (canvas >= offset) & (canvas < offset + length)
            local = (canvas - offset).clamp(0, length - 1)
            first[v] = torch.where(inside, torch.minimum(first[v], node0[local]), first[v])
            last[v] = torch.where(inside, torch.maximum(last[v], last_node[local]), last[v])
            targets = inside.nonzero()[:, 0]
            reads[v].append((targets, canvas[targets], weight[targets] / count[canvas[targets]]))

    # blocks: runs of target indices reading the same first index in every segment, the longest tenth of them cut
    # (such as the first run, which the border clamps)
    change = torch.ones(target_len, dtype=torch.bool)
    change[1:] = (first[:, 1:] != first[:, :-1]).any(0)
    run_starts = change.nonzero()[:, 0]
    run_lengths = torch.diff(run_starts, append=torch.tensor([target_len]))
    length = int(torch.quantile(run_lengths.float(), 0.9, interpolation="lower"))
    starts = torch.cat([torch.arange(int(s), int(s) + int(n), length) for s, n in zip(run_starts, run_lengths)])
    lengths = torch.diff(starts, append=torch.tensor([target_len]))
    block_of = torch.repeat_interleave(torch.arange(starts.numel()), lengths)
    num_blocks = starts.numel()

    block_first = torch.full((num_segments, num_blocks), low_len, dtype=torch.long).scatter_reduce(1, block_of.expand(num_segments, -1), first, "amin")
    block_last = torch.full((num_segments, num_blocks), -1, dtype=torch.long).scatter_reduce(1, block_of.expand(num_segments, -1), last, "amax")
    read = block_last >= 0
    span = int((block_last - block_first + 1)[read].max())
    windows = torch.where(read, block_first.clamp(max=low_len - span), 0)

    share = torch.zeros(num_segments, target_len)
    canvas_first = torch.full((num_blocks,), canvas_len, dtype=torch.long)
    canvas_last = torch.full((num_blocks,), -1, dtype=torch.long)
    for v in range(num_segments):
        for targets, canvas, weight in reads[v]:
            share[v].index_add_(0, targets, weight)
            blocks = block_of[targets]
            canvas_first.scatter_reduce_(0, blocks, canvas, "amin")
            canvas_last.scatter_reduce_(0, blocks, canvas, "amax")
    share_min = torch.full((num_segments, num_blocks), 2.0).scatter_reduce(1, block_of.expand(num_segments, -1), share, "amin")
    share_max = torch.zeros(num_segments, num_blocks).scatter_reduce(1, block_of.expand(num_segments, -1), share, "amax")
    canvas_span = int((canvas_last - canvas_first + 1).max())

    upsample = torch.zeros(num_segments, num_blocks, canvas_span, span)
    resize = torch.zeros(num_segments, num_blocks, length, canvas_span)
    for v, (offset, _) in enumerate(segments):
        for targets, canvas, weight in reads[v]:
            blocks = block_of[targets]
            resize[v].index_put_((blocks, targets - starts[blocks], canvas - canvas_first[blocks]), weight, accumulate=True)
        # the upsampling weights of every canvas index the segment's blocks read, once per block and index
        pairs = torch.cat([torch.stack([block_of[targets], canvas]) for targets, canvas, _ in reads[v]], dim=1)
        blocks, canvas = torch.unique(pairs, dim=1)
        local, rows = canvas - offset, canvas - canvas_first[blocks]
        for node, node_weight in ((node0, node_weight0), (node1, node_weight1)):
            has = node_weight[local] > 0
            column = node[local] - windows[v, blocks]
            upsample[v].index_put_((blocks[has], rows[has], column[has]), node_weight[local][has], accumulate=True)
    return _AxisBlocks(
        starts.to(device), lengths.to(device), block_of.to(device), length, span, windows.to(device),
        share_min.clamp(max=1.0).to(device), share_max.to(device), upsample.to(device), resize.to(device),
        identity=num_segments == 1 and target_len == canvas_len,
    )


@dataclass(frozen=True)
class _ImageBlocks:
    """The row and column blocks of an image, the block `(H, W)` (flat index) of each target pixel and the pixels
    `(BY * BX, L_r * L_c)` (flat indices, -1 for none) of each block."""

    rows: _AxisBlocks
    cols: _AxisBlocks
    block_index: Tensor
    block_pixels: Tensor


@functools.lru_cache(maxsize=16)  # a few recent geometries: the pixel lists take 8 bytes per target pixel or so
def _cached_image_blocks(
    target: Size, canvas: Size, input_size: Size, mask_size: Size, row_segments: tuple, col_segments: tuple, device: torch.device
) -> _ImageBlocks:
    """`_image_blocks` for hashable arguments."""
    rows = _axis_blocks(target[0], canvas[0], input_size[0], mask_size[0], row_segments, device)
    cols = _axis_blocks(target[1], canvas[1], input_size[1], mask_size[1], col_segments, device)
    block_index = rows.block_of[:, None] * cols.starts.numel() + cols.block_of[None, :]
    # the pixels of each block, row-major within the block; -1 past the map's edge
    pixel_rows = rows.starts[:, None] + torch.arange(rows.length, device=device)  # (BY, L_r)
    pixel_cols = cols.starts[:, None] + torch.arange(cols.length, device=device)  # (BX, L_c)
    inside = (torch.arange(rows.length, device=device) < rows.lengths[:, None])[:, None, :, None]
    inside = inside & (torch.arange(cols.length, device=device) < cols.lengths[:, None])[None, :, None, :]
    flat = pixel_rows[:, None, :, None] * target[1] + pixel_cols[None, :, None, :]  # (BY, BX, L_r, L_c)
    block_pixels = torch.where(inside, flat, -1).flatten(2).flatten(0, 1)  # (BY * BX, L_r * L_c)
    return _ImageBlocks(rows, cols, block_index, block_pixels)


def _image_blocks(image: _SemanticImage, input_size: Size, mask_size: Size, device: torch.device) -> _ImageBlocks:
    """The blocks of one image (cached); segment `v` of the axis the views follow is view `v`, the other axis has one
    segment, shared by all views."""
    canvas_h, canvas_w = image.canvas
    if image.axis == 0:
        row_segments = tuple((view.top, view.height) for view in image.views)
        col_segments = ((0, canvas_w),)
    else:
        row_segments = ((0, canvas_h),)
        col_segments = tuple((view.left, view.width) for view in image.views)
    return _cached_image_blocks(tuple(image.target), tuple(image.canvas), tuple(input_size), tuple(mask_size), row_segments, col_segments, device)
