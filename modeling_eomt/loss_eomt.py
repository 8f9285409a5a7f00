"""Hungarian matching and the mask-classification loss of EoMT (Mask2Former's loss, with deep supervision).

`EoMTForUniversalSegmentation.forward` computes it from `mask_labels` / `class_labels`, so it lives with the model (and
is copied with the model's remote code); `EoMTTrainer` and the benchmarks use the same classes.

Targets are given per image: `mask_labels[i]` `(n_i, H, W)` binary masks at the resolution of `pixel_values` and
`class_labels[i]` `(n_i,)` class indices in `[0, num_labels)`. Predicted masks live at a lower resolution (1/4 for
patch 16); both are compared at the same normalised point coordinates with bilinear sampling, so no full-resolution
per-query map is ever built. Points are `(x, y)` in `[0, 1]^2`, sampled like `grid_sample(align_corners=False)`.

The work is batched over the images and the prediction levels (deep supervision): the targets of a batch are
concatenated once (`BatchTargets`), the matching costs of every level and image form one `(L, B, Q, T)` tensor (`T`
the most targets of an image; padding columns are ignored) copied to the host at once, where
`scipy.optimize.linear_sum_assignment` solves each (level, image); the matched pairs of all levels are then sampled and
scored together.

Points per mask (`MaskClassificationLoss(num_points=...)`): "auto" follows the mask-logit resolution
(`auto_num_points`); an int is used as given; None takes the centres of all `H x W` target pixels, so that the matcher
and the loss are deterministic (no importance sampling), which the tests use to compare with a direct computation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import is_scipy_available

from .input_checks import check_target_size, check_targets

if is_scipy_available():  # only the loss needs it: inference runs without scipy (transformers' convention)
    from scipy.optimize import linear_sum_assignment

# Stand-in for NaN / inf costs: such a pair is only assigned when nothing finite is left.
_INVALID_COST = 1e8

MatchIndices = list[tuple[Tensor, Tensor]]  # per image: (query indices, target indices), int64, on the CPU
NumPoints = int | Literal["auto"] | None


# ----------------------------------------------------------------------------------------------------------------------
# Points
# ----------------------------------------------------------------------------------------------------------------------


def auto_num_points(mask_logits_size: tuple[int, int], max_points: int = 12544) -> int:
    """Points per mask for `h x w` mask logits: `min(max_points, h * w)`, at most one point per mask logit.

    A point's loss gradient reaches only the 4 logits around it, so points beyond about one per logit mostly re-weight
    the same logits while the cost grows with their number. The recipe's 12544 points stay as they are at the authors'
    resolutions (160x160 logits at 640 px, 128x128 at 512, 256x256 at 1024); 64x64 logits (128 px, patch 8) get 4096.
    """
    height, width = mask_logits_size
    return min(max_points, height * width)


def sample_points(maps: Tensor, points: Tensor) -> Tensor:
    """Bilinearly sample `maps` `(N, C, H, W)` at `points` `(N, P, 2)` ((x, y) in [0, 1]) -> `(N, C, P)`.

    Zero padding outside the map, `align_corners=False`: a point maps to the same place on maps of any resolution.
    """
    grid = 2.0 * points[:, :, None, :] - 1.0  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]


def pixel_centre_points(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """`(height * width, 2)` (x, y) centres of every pixel of a `height x width` map, row-major, in [0, 1]."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 2)


def importance_sampled_points(mask_logits: Tensor, candidates: Tensor, num_uncertain: int, uniform: Tensor) -> Tensor:
    """PointRend importance sampling: for `(N, 1, h, w)` logits, the `num_uncertain` most uncertain (|logit| smallest)
    of the `candidates` `(N, C, 2)`, followed by the `uniform` points `(N, R, 2)` -> `(N, num_uncertain + R, 2)`."""
    uncertainty = sample_points(mask_logits, candidates)[:, 0].abs()  # (N, C)
    most_uncertain = uncertainty.topk(num_uncertain, dim=1, largest=False, sorted=False).indices  # (N, num_uncertain)
    points = candidates.gather(1, most_uncertain[..., None].expand(-1, -1, 2))
    return torch.cat((points, uniform), dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# Costs and losses on sampled points
# ----------------------------------------------------------------------------------------------------------------------


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points of every (prediction, target) pair: `(..., Q, P)` x `(..., n, P)` -> `(..., Q, n)`.

    Uses `BCE(x, t) = softplus(x) - x * t`, so one matrix product covers both the positive and negative terms.
    """
    num_points = logits.shape[-1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.transpose(-1, -2)) / num_points


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)` of every pair: `(..., Q, P)` x `(..., n, P)` -> `(..., Q, n)`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs @ targets.transpose(-1, -2))
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def sigmoid_bce_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points of matched pairs: `(M, P)`, `(M, P)` -> `(M,)`."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def dice_per_mask(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of matched pairs: `(M, P)`, `(M, P)` -> `(M,)`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


# ----------------------------------------------------------------------------------------------------------------------
# Targets of a batch
# ----------------------------------------------------------------------------------------------------------------------


def drop_crowd_targets(
    mask_labels: Sequence[Tensor], class_labels: Sequence[Tensor], is_crowd: Sequence[Tensor] | None
) -> tuple[list[Tensor], list[Tensor]]:
    """The targets without those marked in `is_crowd` (per image `(n_i,)` bool; None: all kept), which the loss leaves
    out as in training."""
    mask_labels, class_labels = list(mask_labels), list(class_labels)
    if is_crowd is None:
        return mask_labels, class_labels
    if len(is_crowd) != len(class_labels):
        raise ValueError(f"is_crowd has {len(is_crowd)} entries but the batch has {len(class_labels)} images")
    keep = [~torch.as_tensor(crowd, dtype=torch.bool) for crowd in is_crowd]
    mask_labels = [masks[k.to(masks.device)] for masks, k in zip(mask_labels, keep)]
    class_labels = [labels[k.to(labels.device)] for labels, k in zip(class_labels, keep)]
    return mask_labels, class_labels


@dataclass(frozen=True)
class BatchTargets:
    """The targets of a batch in single tensors, built once for every prediction level.

    The masks are converted to float32 once, so that `grid_sample` samples them (one fused kernel, where gathering the
    4 neighbours of every point from boolean masks takes a dozen element-wise passes): one float copy of the batch's
    targets, each sampled at the points of all levels in one call.

    Attributes:
        masks: `(R, 1, H, W)` float32, every target mask, image after image (`R = sum(counts)`).
        classes: `(R,)` int64 their classes.
        images: `(R,)` int64 the image of each.
        counts: the number of targets `n_i` of each image.
        rows: `(B, T)` int64, the row in `masks` of target `t` of image `b`, `T = max(counts)`; padding repeats a valid
            row (its costs are ignored).
    """

    masks: Tensor
    classes: Tensor
    images: Tensor
    counts: tuple[int, ...]
    rows: Tensor

    @classmethod
    def from_lists(
        cls, mask_labels: Sequence[Tensor], class_labels: Sequence[Tensor], device: torch.device
    ) -> BatchTargets:
        counts = tuple(int(masks.shape[0]) for masks in mask_labels)
        height, width = mask_labels[0].shape[-2:]
        masks = torch.empty(sum(counts), 1, height, width, device=device)
        start = 0
        for image_masks, count in zip(mask_labels, counts):  # straight into float32: no boolean copy of the batch
            masks[start : start + count, 0] = image_masks.to(device)
            start += count
        classes = torch.cat([labels.to(device).reshape(-1).long() for labels in class_labels])
        counts_tensor = torch.tensor(counts, dtype=torch.long)
        images = torch.repeat_interleave(torch.arange(len(counts)), counts_tensor)
        offsets = counts_tensor.cumsum(0) - counts_tensor
        columns = torch.arange(max(counts, default=0))
        last = (offsets + counts_tensor - 1).clamp(min=0)  # padding: the image's last row (or any valid one)
        rows = torch.minimum(offsets[:, None] + columns, last[:, None])
        return cls(masks, classes, images.to(device), counts, rows.to(device))

    def num_matches(self, num_queries: int) -> int:
        """Matched pairs per prediction level: `sum_i min(num_queries, n_i)`."""
        return sum(min(num_queries, count) for count in self.counts)


# ----------------------------------------------------------------------------------------------------------------------
# Matcher
# ----------------------------------------------------------------------------------------------------------------------


class HungarianMatcher(nn.Module):
    """One-to-one assignment of targets to queries minimising

        `class_weight * -p(target class) + mask_weight * BCE + dice_weight * dice`,

    both mask costs on the same points per (level, image), shared by predictions and targets: the given ones, else
    `num_points` uniform random points, or every target pixel when `num_points` is None. The costs of all levels and
    images are computed together; `scipy.optimize.linear_sum_assignment` solves each (level, image) on the host.
    """

    def __init__(
        self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0, num_points: int | None = 12544
    ) -> None:
        super().__init__()
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("HungarianMatcher needs at least one non-zero cost weight")
        if num_points is not None and num_points < 1:
            raise ValueError(f"num_points must be positive or None (every pixel), got {num_points}")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    def draw_points(
        self, num_levels: int, batch_size: int, target_size: tuple[int, int], device: torch.device
    ) -> Tensor:
        """`(L, B, P, 2)` matching points: `num_points` uniform ones per (level, image), or every target pixel."""
        if self.num_points is None:
            return pixel_centre_points(*target_size, device).expand(num_levels, batch_size, -1, -1)
        return torch.rand(num_levels, batch_size, self.num_points, 2, device=device)

    @torch.no_grad()
    def cost_matrices(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        targets: BatchTargets,
        points: Tensor | None = None,
    ) -> Tensor:
        """`(L, B, Q, T)` float32 matching costs (column `t >= n_b` of image `b` is padding).

        Args:
            masks_queries_logits: `(L, B, Q, h, w)` predicted mask logits of `L` prediction levels.
            class_queries_logits: `(L, B, Q, K + 1)` class logits, "no object" last.
            targets: the batch's targets.
            points: `(L, B, P, 2)` matching points; None draws them (`draw_points`).
        """
        num_levels, batch_size, num_queries, height, width = masks_queries_logits.shape
        num_columns = targets.rows.shape[1]
        if num_columns == 0:
            return class_queries_logits.new_zeros(num_levels, batch_size, num_queries, 0, dtype=torch.float32)
        if points is None:
            points = self.draw_points(num_levels, batch_size, targets.masks.shape[-2:], masks_queries_logits.device)
        num_points = points.shape[2]
        # (L * B, Q, h, w) with the queries as channels: one bilinear weight per point serves every query.
        pred = sample_points(
            masks_queries_logits.reshape(num_levels * batch_size, num_queries, height, width).float(),
            points.reshape(num_levels * batch_size, num_points, 2),
        ).reshape(num_levels, batch_size, num_queries, num_points)
        image_points = points.transpose(0, 1).reshape(batch_size, num_levels * num_points, 2)  # every level's points
        target = sample_points(targets.masks, image_points[targets.images])[:, 0]  # (R, L * P): each mask once
        target = target[targets.rows].reshape(batch_size, num_columns, num_levels, num_points)  # (B, T, L, P)
        target = target.permute(2, 0, 1, 3)  # (L, B, T, P)

        labels = targets.classes[targets.rows]  # (B, T)
        class_probs = class_queries_logits.float().softmax(-1)  # (L, B, Q, K + 1)
        class_cost = -class_probs.gather(-1, labels[None, :, None, :].expand(num_levels, -1, num_queries, -1))
        cost = (
            self.class_weight * class_cost
            + self.mask_weight * pairwise_sigmoid_bce(pred, target)
            + self.dice_weight * pairwise_dice(pred, target)
        )
        return torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=-_INVALID_COST)

    @staticmethod
    def assign(costs: Tensor, counts: Sequence[int]) -> list[MatchIndices]:
        """Solve `costs` `(L, B, Q, T)` per (level, image), ignoring the padding columns: per level, per image
        `(query_indices, target_indices)`, int64 on the CPU, query indices ascending."""
        if not is_scipy_available():
            raise ImportError("the EoMT loss matches predictions to targets with scipy: pip install scipy")
        host = costs.cpu().numpy()  # one device -> host copy for all levels and images
        empty = torch.zeros(0, dtype=torch.long)
        matches = []
        for level_costs in host:
            level = []
            for image_costs, count in zip(level_costs, counts):
                if count == 0:
                    level.append((empty, empty))
                    continue
                rows, cols = linear_sum_assignment(image_costs[:, :count])
                level.append((torch.from_numpy(rows).long(), torch.from_numpy(cols).long()))
            matches.append(level)
        return matches

    def match(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        targets: BatchTargets,
        points: Tensor | None = None,
    ) -> list[MatchIndices]:
        """`forward` on targets already gathered in a `BatchTargets`."""
        costs = self.cost_matrices(masks_queries_logits, class_queries_logits, targets, points)
        return self.assign(costs, targets.counts)

    @torch.no_grad()
    def forward(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        points: Tensor | None = None,
    ) -> list[MatchIndices]:
        """Per prediction level, per image `(query_indices, target_indices)`, int64 on the CPU, query indices
        ascending; inputs as in `cost_matrices`, with per image `(n_i, H, W)` target masks and `(n_i,)` classes."""
        targets = BatchTargets.from_lists(mask_labels, class_labels, masks_queries_logits.device)
        return self.match(masks_queries_logits, class_queries_logits, targets, points)


# ----------------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------------


def average_across_processes(count: float, device: torch.device) -> Tensor:
    """`count` averaged over the processes of the default `torch.distributed` group (itself when not distributed)."""
    value = torch.tensor(float(count), dtype=torch.float32, device=device)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    # NCCL only reduces CUDA tensors; gloo and the others take CPU tensors.
    reduced = value if dist.get_backend() == "nccl" else value.cpu()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(device) / dist.get_world_size()


@dataclass(frozen=True)
class RandomPoints:
    """The random points of one loss evaluation, drawn in transformers' `EomtLoss` order (per level: the matching
    points, then the candidate and uniform points of the importance sampling), so that a seed gives both the same.

    Attributes:
        matching: `(L, B, P, 2)` matching points of every (level, image).
        candidates: `(L * M, C, 2)` importance-sampling candidates of every matched pair, level after level.
        uniform: `(L * M, R, 2)` uniform points completing them.
        num_uncertain: candidates kept per pair (`P - R`).
    """

    matching: Tensor
    candidates: Tensor
    uniform: Tensor
    num_uncertain: int


class MaskClassificationLoss(nn.Module):
    """EoMT's training loss: Hungarian matching, then per prediction level

    - `loss_mask`: sigmoid BCE of matched masks on `P` importance-sampled points (PointRend: of
      `oversample_ratio * P` uniform candidates, the `importance_sample_ratio` share with the mask logit closest to 0,
      the rest uniform), summed over masks and divided by `num_masks`;
    - `loss_dice`: dice on the same points, likewise normalised;
    - `loss_cross_entropy`: class cross-entropy over all queries, unmatched ones labelled "no object" (the last class,
      weight `no_object_weight`), a weighted mean.

    `num_masks` is the number of target masks in the batch averaged over processes (all-reduced when
    `torch.distributed` is initialised), at least 1. The final prediction and every intermediate one (deep supervision)
    are matched and supervised separately, all levels in the same batched operations; the total is
    `class_weight * CE + mask_weight * BCE + dice_weight * dice` summed over levels. Computed in float32, outside
    autocast.

    Points per mask `P` (the matcher samples as many uniform ones per image): `num_points="auto"` follows the mask-logit
    resolution, `auto_num_points((h, w), max_points)`; an int is used as given; None uses every target pixel in the
    matcher and the loss without importance sampling, a deterministic loss (for tests and exact comparisons), too
    costly for training at full resolution.
    """

    def __init__(
        self,
        num_labels: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: NumPoints = "auto",
        max_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        if not (num_points is None or num_points == "auto" or (isinstance(num_points, int) and num_points >= 1)):
            raise ValueError(f"num_points must be a positive int, 'auto' or None (every pixel), got {num_points!r}")
        if max_points < 1:
            raise ValueError(f"max_points must be positive, got {max_points}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
        self.num_labels = num_labels
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.max_points = max_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight)  # given the loss's points every call
        class_weights = torch.ones(num_labels + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    @classmethod
    def from_config(cls, config, **overrides) -> "MaskClassificationLoss":
        """The loss with the coefficients of an `EoMTConfig`: `class_weight`, ..., `oversample_ratio`,
        `importance_sample_ratio`, and `num_points="auto"` with `max_points=config.train_num_points`; kwargs win (e.g.
        `num_points=1024`, or None for every pixel)."""
        kwargs = dict(
            num_labels=config.num_labels,
            class_weight=config.class_weight,
            mask_weight=config.mask_weight,
            dice_weight=config.dice_weight,
            no_object_weight=config.no_object_weight,
            num_points="auto",
            max_points=config.train_num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def points_per_mask(self, mask_logits_size: tuple[int, int]) -> int | None:
        """`P` for `h x w` mask logits: `num_points`, resolved by `auto_num_points` when "auto"; None: every pixel."""
        if self.num_points == "auto":
            return auto_num_points(mask_logits_size, self.max_points)
        return self.num_points

    def forward(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        intermediate_masks_queries_logits: Sequence[Tensor] | None = None,
        intermediate_class_queries_logits: Sequence[Tensor] | None = None,
        *,
        average_num_masks: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """
        Args:
            masks_queries_logits: `(B, Q, h, w)` final mask logits.
            class_queries_logits: `(B, Q, num_labels + 1)` final class logits.
            mask_labels: per image `(n_i, H, W)` bool/float target masks at the resolution of `pixel_values`.
            class_labels: per image `(n_i,)` integer classes in `[0, num_labels)`.
            intermediate_masks_queries_logits, intermediate_class_queries_logits: the predictions before each masked
                block, first block first (deep supervision), shaped like the final ones; None or empty for none.
            average_num_masks: average `num_masks` across processes (a collective); False uses this batch's count
                alone (evaluation, where processes run different numbers of batches).

        Returns:
            The weighted total loss and the unweighted components: `loss_mask`, `loss_dice`, `loss_cross_entropy` for
            the final prediction and the same with a `_block{i}` suffix for intermediate prediction `i`.
        """
        # Intermediate levels first, then the final one (the order of the random draws of transformers' EoMT loss).
        level_masks = (*(intermediate_masks_queries_logits or ()), masks_queries_logits)
        level_classes = (*(intermediate_class_queries_logits or ()), class_queries_logits)
        self.check_predictions(level_masks, level_classes)
        batch_size, num_queries = masks_queries_logits.shape[:2]
        check_targets(mask_labels, class_labels, batch_size, self.num_labels, tuple(masks_queries_logits.shape[-2:]))

        device = masks_queries_logits.device
        num_masks = sum(len(classes) for classes in class_labels)
        if average_num_masks:
            num_masks = average_across_processes(num_masks, device)
        else:
            num_masks = torch.tensor(float(num_masks), device=device)
        num_masks = num_masks.clamp(min=1)

        num_levels = len(level_masks)
        targets = BatchTargets.from_lists(mask_labels, class_labels, device)
        num_points = self.points_per_mask(tuple(masks_queries_logits.shape[-2:]))
        random_points = self.draw_points(num_levels, batch_size, targets.num_matches(num_queries), num_points, device)
        if random_points is None:
            matching_points = pixel_centre_points(*targets.masks.shape[-2:], device)
            matching_points = matching_points.expand(num_levels, batch_size, -1, -1)
        else:
            matching_points = random_points.matching
        with torch.autocast(device_type=device.type, enabled=False):
            class_logits = torch.stack([classes.float() for classes in level_classes])  # (L, B, Q, K + 1)
            # The matcher's stacked copy is the only full-size one; the loss gathers and converts the matched maps only.
            stacked_masks = torch.stack([masks.detach() for masks in level_masks])  # (L, B, Q, h, w)
            indices = self.matcher.match(stacked_masks, class_logits.detach(), targets, matching_points)
            del stacked_masks
            pairs = matched_pairs(indices, targets.counts, device)
            loss_mask, loss_dice = self.mask_losses(level_masks, targets, pairs, random_points, num_masks)
            loss_cross_entropy = self.class_losses(class_logits, targets, pairs)
        per_level = (
            self.class_weight * loss_cross_entropy + self.mask_weight * loss_mask + self.dice_weight * loss_dice
        )
        components: dict[str, Tensor] = {}
        for level in range(num_levels):
            suffix = f"_block{level}" if level < num_levels - 1 else ""
            components[f"loss_mask{suffix}"] = loss_mask[level]
            components[f"loss_dice{suffix}"] = loss_dice[level]
            components[f"loss_cross_entropy{suffix}"] = loss_cross_entropy[level]
        return per_level.sum(), components

    def check_predictions(self, level_masks: Sequence[Tensor], level_classes: Sequence[Tensor]) -> None:
        """Raise a `ValueError` when the prediction levels do not fit together or the class logits the labels."""
        if len(level_masks) != len(level_classes):
            raise ValueError(
                f"got {len(level_masks) - 1} intermediate mask predictions but {len(level_classes) - 1} "
                "intermediate class predictions"
            )
        masks, classes = level_masks[-1], level_classes[-1]
        batch_size, num_queries = masks.shape[:2]
        if classes.shape[:2] != (batch_size, num_queries) or classes.shape[-1] != self.num_labels + 1:
            raise ValueError(
                f"class_queries_logits has shape {tuple(classes.shape)}, expected "
                f"({batch_size}, {num_queries}, {self.num_labels + 1}) (num_labels + 1 with 'no object')"
            )
        for index, (level_mask, level_class) in enumerate(zip(level_masks[:-1], level_classes[:-1])):
            if level_mask.shape != masks.shape or level_class.shape != classes.shape:
                raise ValueError(
                    f"intermediate prediction {index} has mask logits {tuple(level_mask.shape)} and class logits "
                    f"{tuple(level_class.shape)}, expected the final prediction's {tuple(masks.shape)} and "
                    f"{tuple(classes.shape)}"
                )

    def draw_points(
        self, num_levels: int, batch_size: int, num_matches: int, num_points: int | None, device: torch.device
    ) -> RandomPoints | None:
        """Every random point of one evaluation with `num_matches` pairs per level (None when `num_points` is None)."""
        if num_points is None:
            return None
        num_candidates = int(num_points * self.oversample_ratio)
        num_uncertain = int(self.importance_sample_ratio * num_points)
        num_uniform = num_points - num_uncertain
        matching = torch.empty(num_levels, batch_size, num_points, 2, device=device)
        candidates = torch.empty(num_levels, num_matches, num_candidates, 2, device=device)
        uniform = torch.empty(num_levels, num_matches, num_uniform, 2, device=device)
        for level in range(num_levels):  # fills each block like torch.rand of its shape would, in transformers' order
            for block in (matching[level], candidates[level], uniform[level]):
                if block.numel() > 0:
                    block.uniform_()
        return RandomPoints(matching, candidates.flatten(0, 1), uniform.flatten(0, 1), num_uncertain)

    def mask_losses(
        self,
        level_masks: Sequence[Tensor],
        targets: BatchTargets,
        pairs: Tensor,
        random_points: RandomPoints | None,
        num_masks: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """`(L,)` BCE and dice of the matched (prediction, target) pairs on their points, each summed / `num_masks`."""
        num_levels = len(level_masks)
        num_matches = pairs.shape[1] // num_levels
        if num_matches == 0:
            zero = torch.stack([masks.sum().float() * 0.0 for masks in level_masks])  # keeps the graph (zero gradients)
            return zero, zero
        levels, images, queries, rows = pairs
        level_slices = [slice(level * num_matches, (level + 1) * num_matches) for level in range(num_levels)]
        # (L * M, 1, h, w): only the matched maps are gathered and converted to float32
        pred_masks = torch.cat([masks[images[s], queries[s]] for masks, s in zip(level_masks, level_slices)])
        pred_masks = pred_masks[:, None].float()
        with torch.no_grad():
            if random_points is None:
                points = pixel_centre_points(*targets.masks.shape[-2:], pred_masks.device)
                points = points.expand(pred_masks.shape[0], -1, -1)
            else:
                points = importance_sampled_points(
                    pred_masks, random_points.candidates, random_points.num_uncertain, random_points.uniform
                )  # (L * M, P, 2)
            point_targets = self.sample_matched_targets(targets, points, levels, rows, num_levels)  # (L * M, P)
        point_logits = sample_points(pred_masks, points)[:, 0]  # (L * M, P)
        loss_mask = sigmoid_bce_per_mask(point_logits, point_targets).reshape(num_levels, num_matches).sum(1)
        loss_dice = dice_per_mask(point_logits, point_targets).reshape(num_levels, num_matches).sum(1)
        return loss_mask / num_masks, loss_dice / num_masks

    @staticmethod
    def sample_matched_targets(
        targets: BatchTargets, points: Tensor, levels: Tensor, rows: Tensor, num_levels: int
    ) -> Tensor:
        """Target mask `rows[k]` at `points[k]` `(L * M, P, 2)` for every matched pair `k` -> `(L * M, P)`.

        A target is matched at most once per level, so each mask is sampled once, at the points of its (up to `L`)
        pairs side by side, instead of copying a float mask per pair.
        """
        num_points = points.shape[1]
        slots = points.new_zeros(targets.masks.shape[0], num_levels, num_points, 2)  # unmatched slots: dummy points
        slots[rows, levels] = points
        values = sample_points(targets.masks, slots.flatten(1, 2))[:, 0]  # (R, L * P)
        return values.reshape(-1, num_levels, num_points)[rows, levels]

    def class_losses(self, class_logits: Tensor, targets: BatchTargets, pairs: Tensor) -> Tensor:
        """`(L,)` weighted-mean cross-entropy over all queries of each level (`class_logits` `(L, B, Q, K + 1)`);
        unmatched queries target "no object" (`num_labels`)."""
        levels, images, queries, rows = pairs
        target_classes = torch.full_like(class_logits[..., 0], self.num_labels, dtype=torch.long)  # (L, B, Q)
        target_classes[levels, images, queries] = targets.classes[rows]
        weights = self.class_weights.to(class_logits.device)[target_classes]  # (L, B, Q)
        nll = -class_logits.log_softmax(-1).gather(-1, target_classes[..., None])[..., 0]
        return (weights * nll).sum((1, 2)) / weights.sum((1, 2))


def loss_from_labels(
    loss_fn: Callable[..., tuple[Tensor, dict[str, Tensor]]],
    outputs: Any,
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    is_crowd: Sequence[Tensor] | None = None,
    input_size: tuple[int, int] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`loss_fn` (a `MaskClassificationLoss`, or anything called like one) on a model's output
    (`EoMTForUniversalSegmentationOutput`: the final and intermediate logits): what `EoMTForUniversalSegmentation`
    returns as its loss.

    Args:
        outputs: the model's output for the batch.
        mask_labels, class_labels: the targets, as in `MaskClassificationLoss.forward`.
        is_crowd: per image `(n_i,)` bool: crowd targets are dropped (`drop_crowd_targets`).
        input_size: `(H, W)` of `pixel_values`, which the target masks must have (checked per image when given).
    """
    mask_labels, class_labels = drop_crowd_targets(mask_labels, class_labels, is_crowd)
    if input_size is not None:
        check_target_size(mask_labels, input_size)
    return loss_fn(
        outputs.masks_queries_logits,
        outputs.class_queries_logits,
        mask_labels,
        class_labels,
        outputs.intermediate_masks_queries_logits,
        outputs.intermediate_class_queries_logits,
    )


def matched_pairs(indices: Sequence[MatchIndices], counts: Sequence[int], device: torch.device) -> Tensor:
    """`(4, L * M)` int64: the level, image, query and target row (in `BatchTargets.masks`) of every matched pair,
    level after level, image after image, queries ascending (the order of the importance-sampling draws)."""
    offsets = [0]
    for count in counts[:-1]:
        offsets.append(offsets[-1] + count)
    columns = [
        torch.stack((torch.full_like(rows, level), torch.full_like(rows, image), rows, cols + offsets[image]))
        for level, level_indices in enumerate(indices)
        for image, (rows, cols) in enumerate(level_indices)
    ]
    return torch.cat(columns, dim=1).to(device)  # one host -> device copy
