"""Semantic segmentation: per-class scores summed over queries (sliding windows averaged), and their argmax found
block by block from bounds on the low-resolution logits, pixel by pixel where the bounds leave a block open, and
from the exact scores, point by point, where neither decides (docs/post_processing.md)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import Size, _check_outputs, _input_size, _size_list
from .geometry import _linear_taps, _merged_scores, _semantic_layout, _SemanticImage
from .semantic_blocks import _AxisBlocks, _image_blocks, _ImageBlocks

# Queries whose best class probability stays below this in every view are left out of the bounds (their largest
# possible contribution is added to the upper bounds) when at least half of the queries are.
_KEPT_CLASS_PROB = 0.01
# Blocks that the bounds leave open are decided pixel by pixel from the exact mask probabilities of this many queries
# (those whose probability varies most over the block) and bounds on the other queries, for the block's winner and
# the classes that may beat it, up to this many (the rest bounded as a whole).
_ACTIVE_QUERIES = 16
_CANDIDATE_CLASSES = 8
# Above these fractions of open blocks / of pixels left to the exact repair, the full computation is cheaper.
_MAX_OPEN_FRACTION = 0.5
_MAX_REPAIR_FRACTION = 0.15
# A decision needs a margin of this much (times the largest score, at least 1): it covers float32 rounding in the
# bounds (sums of up to a few hundred non-negative terms) and in the exact scores.
_RELATIVE_SLACK = 1e-4
# Window bounds are computed for this many queries at a time (so that the steps stay in cache), the pixel-level
# pass for this many (block, query) pairs at a time (memory).
_QUERY_CHUNK = 8
_CHUNK_PAIRS = 1 << 17


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
    if image.target == image.canvas:  # resize_bilinear copies: the target pixels are canvas pixels
        canvas_rows, canvas_cols = pixels[:, 0], pixels[:, 1]
    else:
        rows = [tap[pixels[:, 0]] for tap in _linear_taps(target_h, canvas_h, device)]
        cols = [tap[pixels[:, 1]] for tap in _linear_taps(target_w, canvas_w, device)]
        corner_rows = torch.stack([rows[0], rows[0], rows[1], rows[1]], dim=1)  # (M, 4) canvas taps of each pixel
        corner_cols = torch.stack([cols[0], cols[1], cols[0], cols[1]], dim=1)
        corner_weights = torch.stack([rows[2] * cols[2], rows[2] * cols[3], rows[3] * cols[2], rows[3] * cols[3]], dim=1)
        keys, inverse = torch.unique(corner_rows * canvas_w + corner_cols, return_inverse=True)
        canvas_rows, canvas_cols = keys // canvas_w, keys % canvas_w

    mask_h, mask_w = logits.shape[-2:]
    row_taps, col_taps = _linear_taps(input_size[0], mask_h, device), _linear_taps(input_size[1], mask_w, device)
    total = count = None
    if len(image.views) > 1:  # overlapping views: sum and count per canvas pixel
        total = probs.new_zeros((canvas_rows.shape[0], probs.shape[-1]))
        count = probs.new_zeros((canvas_rows.shape[0], 1))
    for view in image.views:
        inside = (
            (canvas_rows >= view.top) & (canvas_rows < view.top + view.height)
            & (canvas_cols >= view.left) & (canvas_cols < view.left + view.width)
        )
        y, x = canvas_rows[inside] - view.top, canvas_cols[inside] - view.left
        y0, y1, wy0, wy1 = (tap[y] for tap in row_taps)
        x0, x1, wx0, wx1 = (tap[x] for tap in col_taps)
        corners = torch.stack([y0 * mask_w + x0, y0 * mask_w + x1, y1 * mask_w + x0, y1 * mask_w + x1], dim=1)  # (n, 4)
        weights = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=1)
        # neighbouring pixels share their low-resolution corners: each corner's logits are read once, as a row, and
        # each pixel's weighted sum of its corners' rows is one embedding-bag sum
        nodes, which = torch.unique(corners, return_inverse=True)
        node_logits = logits[view.output].flatten(1).index_select(1, nodes).T.contiguous()  # (nodes, Q)
        upsampled = F.embedding_bag(which, node_logits, per_sample_weights=weights, mode="sum")  # (n, Q)
        scores = upsampled.sigmoid_() @ probs[view.output]  # (n, K)
        if count is None:  # one view, covering the canvas
            total = scores
            break
        total[inside] += scores
        count[inside] += 1
    canvas_scores = total if count is None else total / count.clamp(min=1)  # (U, K)
    if image.target == image.canvas:
        return canvas_scores
    return (canvas_scores[inverse] * corner_weights[..., None]).sum(1)


def _decide(low: Tensor, high: Tensor, slack: float, rival: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """From lower and upper bounds of the class scores (classes along dim 1): the class with the highest lower bound,
    and whether it surely wins, its lower bound exceeding by more than `slack` the upper bound of every other class
    and `rival` (a bound on classes left out, broadcast against the result). `high` is used in place, restored."""
    best, winner = low.max(1)
    winner = winner.unsqueeze(1)
    own = high.gather(1, winner)
    others = high.scatter_(1, winner, -math.inf).amax(1)
    high.scatter_(1, winner, own)
    if rival is not None:
        others = torch.maximum(others, rival)
    return winner.squeeze(1), best > others + slack


def _sliding(values: Tensor, span: int, dim: int, reduce: Callable[..., Tensor], out: Tensor | None = None) -> Tensor:
    """`reduce` (torch.minimum / maximum) over every `span` consecutive entries along `dim` (into `out`)."""
    count = values.shape[dim] - span + 1
    result = values.narrow(dim, 0, count)
    for shift in range(1, span):
        result = reduce(result, values.narrow(dim, shift, count), out=out if shift == span - 1 else None)
    if out is not None and span == 1:
        out.copy_(result)
    return out if out is not None else result


def _window_probability_bounds(logits: Tensor, row_span: int, col_span: int) -> tuple[Tensor, Tensor]:
    """The smallest and largest mask probability `(Q, windows)` at the low-resolution logits `(Q, h, w)` of each
    window of `row_span x col_span` (windows in row-major order). An interpolated logit lies between the window's
    extreme logits up to float32 rounding, and sigmoid is monotonic: its probability lies between these, up to the
    rounding (see `_semantic_map`)."""
    num_queries, height, width = logits.shape
    shape = (num_queries, height - row_span + 1, width - col_span + 1)
    low, high = logits.new_empty(shape), logits.new_empty(shape)
    for start in range(0, num_queries, _QUERY_CHUNK):
        part = slice(start, start + _QUERY_CHUNK)
        probs = logits[part].sigmoid()
        _sliding(_sliding(probs, row_span, 1, torch.minimum), col_span, 2, torch.minimum, out=low[part])
        _sliding(_sliding(probs, row_span, 1, torch.maximum), col_span, 2, torch.maximum, out=high[part])
    return low.flatten(1), high.flatten(1)


@dataclass
class _BlockBounds:
    """Bounds over the blocks of one image, per view: of the query mask probabilities over each window `(Q, windows)`
    and of the class scores over each window `(windows, K)`, the window `(NB,)` each block reads and the view's
    smallest and largest share `(NB,)` of each block (None: 1 everywhere)."""

    probability_low: list[Tensor]
    probability_high: list[Tensor]
    score_low: list[Tensor]
    score_high: list[Tensor]
    window_of: list[Tensor]
    share_low: list[Tensor | None]
    share_high: list[Tensor | None]

    def _gather(self, per_view: list[Tensor], shares: list[Tensor | None], blocks: Tensor, dim: int) -> Tensor:
        """Per-window values of each view at `blocks`, times the view's share (windows along `dim`)."""
        gathered = []
        for values, windows, share in zip(per_view, self.window_of, shares):
            values = values.index_select(dim, windows.index_select(0, blocks))
            gathered.append(values if share is None else values * share.index_select(0, blocks).unsqueeze(1 - dim))
        return gathered

    def scores(self, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """Class score bounds `(N, K)` over `blocks`: summed over views."""
        low = self._gather(self.score_low, self.share_low, blocks, 0)
        high = self._gather(self.score_high, self.share_high, blocks, 0)
        return functools.reduce(torch.add, low), functools.reduce(torch.add, high)

    def probabilities(self, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds `(V * Q, N)` of each view's query mask probabilities (times its share) over `blocks`."""
        low = self._gather(self.probability_low, self.share_low, blocks, 1)
        high = self._gather(self.probability_high, self.share_high, blocks, 1)
        return (low[0], high[0]) if len(low) == 1 else (torch.cat(low), torch.cat(high))


def _block_bounds(
    view_logits: Tensor, view_probs: Tensor, rows: _AxisBlocks, cols: _AxisBlocks, axis: int, left_out: Tensor | None
) -> _BlockBounds:
    """Bounds on the blocks of an image from its views' logits `(V, Q, h, w)` and class probabilities `(V, Q, K)`:
    over every window of each view's logits (the class scores by one matrix product per view and bound), plus
    `left_out` `(K,)` (the most the queries left out add to a class score) on the upper bounds."""
    bounds = _BlockBounds([], [], [], [], [], [], [])
    for v, (logits, probs) in enumerate(zip(view_logits, view_probs)):
        row_segment, col_segment = (v, 0) if axis == 0 else (0, v)
        low, high = _window_probability_bounds(logits, rows.span, cols.span)
        windows_per_row = logits.shape[2] - cols.span + 1
        bounds.window_of.append((rows.windows[row_segment][:, None] * windows_per_row + cols.windows[col_segment][None, :]).flatten())
        bounds.probability_low.append(low)
        bounds.probability_high.append(high)
        bounds.score_low.append(low.T @ probs)  # (windows, K)
        bounds.score_high.append(high.T @ probs if left_out is None else torch.addmm(left_out, high.T, probs))
        for shares, row_share, col_share in ((bounds.share_low, rows.share_min, cols.share_min), (bounds.share_high, rows.share_max, cols.share_max)):
            share = (row_share[row_segment][:, None] * col_share[col_segment][None, :]).flatten()
            shares.append(None if bool((share == 1).all()) else share)
    return bounds


def _decide_blocks(bounds: _BlockBounds, slack: float) -> tuple[Tensor, Tensor]:
    """The winner of every block by its class score bounds and whether it surely wins (`_decide`), each window of each
    view decided once: a block that reads one view, or several with a constant share each (summing to 1), surely
    won by the same class in each, is surely won by that class; the others are decided from their summed bounds."""
    winner = surely = None
    for low, high, windows, share_low, share_high in zip(
        bounds.score_low, bounds.score_high, bounds.window_of, bounds.share_low, bounds.share_high
    ):
        view_winner, view_surely = (decision.index_select(0, windows) for decision in _decide(low, high, slack))
        if share_high is not None:  # a view not read does not count; a share varying over the block is not settled
            reads = share_high > 0
            view_surely = (view_surely & (share_low == share_high)) | ~reads
            view_winner = torch.where(reads, view_winner, -1)
        if winner is None:
            winner, surely = view_winner, view_surely
        else:
            surely = surely & view_surely & ((winner == view_winner) | (winner < 0) | (view_winner < 0))
            winner = torch.where(winner < 0, view_winner, winner)
    mixed = (~surely).nonzero()[:, 0]
    if len(bounds.score_low) > 1 and mixed.numel():
        mixed_winner, mixed_surely = _decide(*bounds.scores(mixed), slack)
        winner[mixed], surely[mixed] = mixed_winner, mixed_surely
    return winner, surely


def _take(values: Tensor, index: Tensor) -> Tensor:
    """`values.flatten()[index]` (any shape of `index`), as one contiguous gather."""
    return values.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)


def _block_matrices(rows: _AxisBlocks, cols: _AxisBlocks, which: str, block_rows: Tensor, block_cols: Tensor) -> list[Tensor]:
    """Per segment of the views' axis (the other axis has one, shared), each block's 2-d bilinear weights
    `(N, X_r * X_c, Y_r * Y_c)`: the Kronecker product of its row and column matrices (`which`: "upsample" or
    "resize")."""
    row_matrices, col_matrices = getattr(rows, which), getattr(cols, which)  # (V_r, NB_r, X_r, Y_r), (V_c, ...)
    products = []
    for v in range(max(row_matrices.shape[0], col_matrices.shape[0])):
        row = row_matrices[min(v, row_matrices.shape[0] - 1)].index_select(0, block_rows)  # (N, X_r, Y_r)
        col = col_matrices[min(v, col_matrices.shape[0] - 1)].index_select(0, block_cols)  # (N, X_c, Y_c)
        kron = row[:, :, None, :, None] * col[:, None, :, None, :]  # (N, X_r, X_c, Y_r, Y_c)
        products.append(kron.flatten(3).flatten(1, 2))
    return products


def _per_segment(matrices: list[Tensor], values: Tensor, segments: Tensor) -> Tensor:
    """`values` `(N, A, Y)` times each block's matrix `(X, Y)` transposed: `(N, A, X)`, value `a` taking the
    matrix of its segment `segments[n, a]` where the axis has several."""
    products = [values @ matrix.transpose(1, 2) for matrix in matrices]
    if len(products) == 1:
        return products[0]
    stacked = torch.stack(products)  # (V, N, A, X)
    return stacked.gather(0, segments[None, :, :, None].expand(1, *stacked.shape[1:]))[0]


def _block_mask_probs(
    view_logits: Tensor, active: Tensor, block_rows: Tensor, block_cols: Tensor, rows: _AxisBlocks, cols: _AxisBlocks, axis: int
) -> Tensor:
    """Exact mask probabilities `(N, A, L_r * L_c)` over the pixels of blocks (`block_rows`, `block_cols`) `(N,)` of
    their `active` `(N, A)` queries (`view * Q + query`): each window's logits upsampled, cropped, through sigmoid
    and resized with the block's weights (those of torch's kernels), the `A` queries of a block in one product."""
    num_queries, height, width = view_logits.shape[1:]
    device = active.device
    views = active // num_queries
    row_windows = rows.windows[:, block_rows].T  # (N, V_r): the block's window in each row segment
    col_windows = cols.windows[:, block_cols].T
    row_window = row_windows.gather(1, views) if axis == 0 else row_windows[:, :1].expand_as(active)
    col_window = col_windows[:, :1].expand_as(active) if axis == 0 else col_windows.gather(1, views)
    corner = (active * height + row_window) * width + col_window  # (N, A) first logit of each window
    offsets = torch.arange(rows.span, device=device)[:, None] * width + torch.arange(cols.span, device=device)
    windows = _take(view_logits, corner[:, :, None] + offsets.flatten())  # (N, A, S_r * S_c)
    mask_probs = _per_segment(_block_matrices(rows, cols, "upsample", block_rows, block_cols), windows, views).sigmoid_()
    if rows.identity and cols.identity:
        return mask_probs
    return _per_segment(_block_matrices(rows, cols, "resize", block_rows, block_cols), mask_probs, views)


def _candidate_classes(low: Tensor, high: Tensor, winner: Tensor, slack: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The candidate classes `(N, 1 + C)` of blocks from their class score bounds `(N, K)`: the winner by lower bound
    and the classes whose upper bound reaches that lower bound less `slack` (the others never win in the block).
    Past `_CANDIDATE_CLASSES` of those, the ones with the highest upper bounds are kept and the rest bounded as a
    whole (`left_out` `(N,)`, else None); unused places hold class 0 with bounds of -inf. Returns the classes,
    their lower and upper bounds and `left_out`."""
    count_blocks, device = low.shape[0], low.device
    winner = winner[:, None]
    contenders = high >= low.gather(1, winner) - slack
    contenders.scatter_(1, winner, False)
    count = contenders.view(torch.uint8).sum(1, dtype=torch.int32)
    places = min(_CANDIDATE_CLASSES, int(count.max()))
    classes = torch.zeros(count_blocks, places, dtype=torch.long, device=device)
    left_out = None
    many = (count > places).nonzero()[:, 0]
    if many.numel():
        ranked = high[many].masked_fill_(~contenders[many], -math.inf).topk(places + 1, dim=1)
        classes[many] = ranked.indices[:, :places]
        left_out = torch.full((count_blocks,), -math.inf, device=device).index_put_((many,), ranked.values[:, places])
        contenders[many] = False
    block, klass = contenders.nonzero().unbind(1)  # the other blocks' contenders, all of them, in class order
    kept = count.masked_fill(count > places, 0).long()
    classes[block, torch.arange(block.numel(), device=device) - (kept.cumsum(0) - kept)[block]] = klass
    classes = torch.cat([winner, classes], dim=1)
    used = torch.arange(1 + places, device=device) <= count.clamp(max=places)[:, None]
    return classes, low.gather(1, classes).masked_fill_(~used, -math.inf), high.gather(1, classes).masked_fill_(~used, -math.inf), left_out


def _decide_pixels(
    view_logits: Tensor, class_probs: Tensor, bounds: _BlockBounds, winner: Tensor, image_blocks: _ImageBlocks, axis: int,
    blocks: Tensor, slack: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The pixels of the open `blocks` (flat indices) decided from the exact mask probabilities of the
    `_ACTIVE_QUERIES` queries whose variation moves a class score most over each block and bounds on the other
    queries, for the block's candidate classes: flat pixel indices and their classes, and those of the pixels still
    open."""
    rows, cols, block_pixels = image_blocks.rows, image_blocks.cols, image_blocks.block_pixels
    low, high = bounds.probabilities(blocks)  # (V * Q, N) bounds of each query's mask probability over the block
    spread = (high - low).mul_(class_probs.amax(1)[:, None]).T  # (N, V * Q)
    active = spread.contiguous().topk(min(_ACTIVE_QUERIES, spread.shape[1]), dim=1, sorted=False).indices  # (N, A)
    classes, class_low, class_high, left_out = _candidate_classes(*bounds.scores(blocks), winner.index_select(0, blocks), slack)
    active_probs = _take(class_probs, active[:, None, :] * class_probs.shape[1] + classes[:, :, None])  # (N, C, A)
    # bounds on the other queries' part: the block's bounds less the active queries' part of them
    flat = active * blocks.numel() + torch.arange(blocks.numel(), device=blocks.device)[:, None]  # into (V * Q, N)
    active_part = active_probs @ torch.stack([_take(low, flat), _take(high, flat)], dim=2)  # (N, C, 2)
    low_others, high_others = class_low - active_part[..., 0], class_high - active_part[..., 1]

    block_rows, block_cols = blocks // cols.starts.numel(), blocks % cols.starts.numel()
    decided_pixels, decided_classes, open_pixels = [], [], []
    chunk = max(1, _CHUNK_PAIRS // active.shape[1])
    for start in range(0, blocks.numel(), chunk):
        part = slice(start, start + chunk)
        mask_probs = _block_mask_probs(view_logits, active[part], block_rows[part], block_cols[part], rows, cols, axis)  # (n, A, px)
        scores = active_probs[part] @ mask_probs  # (n, C, px) from the active queries
        rival = None if left_out is None else left_out[part, None]
        pixel_class, surely = _decide(scores + low_others[part, :, None], scores.add_(high_others[part, :, None]), slack, rival)
        pixels = block_pixels.index_select(0, blocks[part])  # (n, px), -1 past the map's edge
        done = surely & (pixels >= 0)
        decided = done.flatten().nonzero()[:, 0]
        decided_pixels.append(pixels.flatten()[decided])
        decided_classes.append(classes[part].gather(1, pixel_class).flatten()[decided])
        open_pixels.append(pixels[~surely & (pixels >= 0)])
    return torch.cat(decided_pixels), torch.cat(decided_classes), torch.cat(open_pixels)


def _semantic_map(image: _SemanticImage, probs: Tensor, logits: Tensor, input_size: Size) -> Tensor:
    """Argmax of the exact class scores `(H, W)`, settled block by block from bounds on the low-resolution logits,
    then pixel by pixel in the open blocks, then exactly where neither decides (see docs/post_processing.md)."""
    outputs = [view.output for view in image.views]
    if outputs == list(range(outputs[0], outputs[0] + len(outputs))):  # consecutive outputs: a view, not a copy
        view_probs, view_logits = probs[outputs[0] : outputs[-1] + 1], logits[outputs[0] : outputs[-1] + 1]
    else:
        view_probs, view_logits = probs[outputs], logits[outputs]  # (V, Q, K), (V, Q, h, w)

    def exact_map() -> Tensor:
        return _merged_scores(image, list(view_probs), list(view_logits), input_size).max(0).indices

    smallest, largest = torch.aminmax(view_logits)
    magnitude = max(-float(smallest), float(largest))
    if probs.shape[-1] < 2 or not math.isfinite(magnitude) or magnitude > 1e6:
        return exact_map()
    left_out, bound_probs, bound_logits = None, view_probs, view_logits  # the queries the bounds follow
    kept = (view_probs.amax(-1) >= _KEPT_CLASS_PROB).any(0)  # (Q,)
    if 0 < 2 * int(kept.sum()) <= kept.numel():
        # each pixel's views' shares sum to 1: the left-out queries add at most their largest total in one view
        left_out = (view_probs * ~kept[:, None]).sum(1).amax(0)  # (K,)
        bound_probs, bound_logits = view_probs[:, kept], view_logits[:, kept]
    image_blocks = _image_blocks(image, input_size, tuple(logits.shape[-2:]), logits.device)
    rows, cols = image_blocks.rows, image_blocks.cols
    bounds = _block_bounds(bound_logits, bound_probs, rows, cols, image.axis, left_out)
    # The bounds hold up to float32 rounding, which the decisions' slack covers: in the scores (sums of up to a few
    # hundred non-negative terms: 1e-4 of the largest score) and in the mask probabilities, whose logits are convex
    # combinations rounded within 1e-6 of the largest magnitude (moving sigmoid by a quarter of that at most, plus
    # its own rounding), for every query of each class (at most the largest total class probability).
    class_total = float(bound_probs.sum(1).amax())
    largest_score = sum(float(high.amax()) for high in bounds.score_high)
    slack = _RELATIVE_SLACK * max(1.0, largest_score) + 2 * (0.25e-6 * magnitude + 1e-7) * class_total
    winner, surely = _decide_blocks(bounds, slack)
    open_blocks = (~surely).nonzero()[:, 0]
    if open_blocks.numel() > _MAX_OPEN_FRACTION * surely.numel():
        return exact_map()
    segmentation = _take(winner, image_blocks.block_index)
    if open_blocks.numel() == 0:
        return segmentation
    pixels, classes, open_pixels = _decide_pixels(
        bound_logits, bound_probs.flatten(0, 1), bounds, winner, image_blocks, image.axis, open_blocks, slack
    )
    segmentation.view(-1)[pixels] = classes
    if open_pixels.numel() > _MAX_REPAIR_FRACTION * segmentation.numel():
        return exact_map()
    if open_pixels.numel():
        width = segmentation.shape[1]
        points = torch.stack([open_pixels // width, open_pixels % width], dim=1)
        segmentation.view(-1)[open_pixels] = _scores_at_pixels(image, probs, logits, input_size, points).argmax(1)
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
    probs = class_logits.softmax(dim=-1)[..., :-1].contiguous()  # (N, Q, K)

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
