"""Hungarian matching and the mask-classification loss of EoMT (Mask2Former's loss, with deep supervision).

Targets are given per image: `mask_labels[i]` `(n_i, H, W)` binary masks at the resolution of `pixel_values` and
`class_labels[i]` `(n_i,)` class indices in `[0, num_labels)`. Predicted masks live at a lower resolution (1/4 for
patch 16); both are compared at the same normalised point coordinates with bilinear sampling, so no full-resolution
per-query map is ever built. Points are `(x, y)` in `[0, 1]^2`, sampled like `grid_sample(align_corners=False)`.

With `num_points=None` the points are the centres of all `H x W` target pixels: the matcher and the loss are then
deterministic (no importance sampling), which the tests use to compare with a direct computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .metrics.distributed import all_reduce_sum, is_distributed

# Stand-in for NaN / inf costs: such a pair is only assigned when nothing finite is left.
_INVALID_COST = 1e8

MatchIndices = list[tuple[Tensor, Tensor]]  # per image: (query indices, target indices), int64, on the CPU


# ----------------------------------------------------------------------------------------------------------------------
# Point sampling
# ----------------------------------------------------------------------------------------------------------------------


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


def sample_target_points(masks: Tensor, points: Tensor) -> Tensor:
    """Target masks `(n, H, W)` (bool or float) sampled like `sample_points` at `points` `(n or 1, P, 2)` -> `(n, P)`
    float32.

    Gathers the 4 neighbours of every point instead of converting whole full-resolution masks to float for
    `grid_sample`: the same bilinear weights and zero padding, a fraction of the memory traffic.
    """
    num_masks, height, width = masks.shape
    flat = masks.reshape(num_masks, height * width)
    grid = 2.0 * points - 1.0  # grid_sample's normalised coordinates, un-normalised below exactly as it does
    x = ((grid[..., 0] + 1) * width - 1) / 2  # (n or 1, P) pixel coordinates
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = x.floor(), y.floor()
    x1, y1 = x0 + 1, y0 + 1
    corners = (  # (column, row, bilinear weight) in grid_sample's order
        (x0, y0, (x1 - x) * (y1 - y)),
        (x1, y0, (x - x0) * (y1 - y)),
        (x0, y1, (x1 - x) * (y - y0)),
        (x1, y1, (x - x0) * (y - y0)),
    )
    values = 0.0
    for column, row, weight in corners:
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)  # zero padding outside
        index = (row.clamp(0, height - 1) * width + column.clamp(0, width - 1)).long()
        values = values + flat.gather(1, index.expand(num_masks, -1)).float() * (weight * inside)
    return values


# ----------------------------------------------------------------------------------------------------------------------
# Costs and losses on sampled points
# ----------------------------------------------------------------------------------------------------------------------


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points of every (prediction, target) pair: `(Q, P)` x `(n, P)` -> `(Q, n)`.

    Uses `BCE(x, t) = softplus(x) - x * t`, so one matrix product covers both the positive and negative terms.
    """
    num_points = logits.shape[1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / num_points


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)` of every pair: `(Q, P)` x `(n, P)` -> `(Q, n)`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs @ targets.T)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
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
# Input checks
# ----------------------------------------------------------------------------------------------------------------------


def check_targets(
    mask_labels: Sequence[Tensor],
    class_labels: Sequence[Tensor],
    batch_size: int,
    num_labels: int,
    mask_logits_size: tuple[int, int],
) -> None:
    """Raise a `ValueError` naming the image and the problem when the targets do not fit the predictions."""
    for name, labels in (("mask_labels", mask_labels), ("class_labels", class_labels)):
        if not isinstance(labels, (list, tuple)):
            raise ValueError(f"{name} must be a list with one tensor per image, got {type(labels).__name__}")
        if len(labels) != batch_size:
            raise ValueError(f"{name} has {len(labels)} entries but the batch has {batch_size} images")
    target_size = None
    for index, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
        if not isinstance(masks, Tensor) or masks.ndim != 3:
            shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"mask_labels[{index}] must be a (num_masks, height, width) tensor, got {shape}")
        if not isinstance(classes, Tensor) or classes.ndim != 1:
            shape = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"class_labels[{index}] must be a (num_masks,) tensor, got {shape}")
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise ValueError(f"class_labels[{index}] must hold integer class indices, got dtype {classes.dtype}")
        if masks.shape[0] != classes.shape[0]:
            raise ValueError(
                f"image {index}: mask_labels has {masks.shape[0]} masks but class_labels has {classes.shape[0]} labels"
            )
        size = tuple(masks.shape[-2:])
        if target_size is None:
            target_size = size
        elif size != target_size:
            raise ValueError(
                f"image {index}: target masks are {size[0]}x{size[1]} but image 0's are {target_size[0]}x{target_size[1]}; "
                "all target masks must have the resolution of pixel_values"
            )
    if target_size is not None and target_size[0] * mask_logits_size[1] != target_size[1] * mask_logits_size[0]:
        raise ValueError(
            f"target masks are {target_size[0]}x{target_size[1]} but the predicted masks are "
            f"{mask_logits_size[0]}x{mask_logits_size[1]}: the aspect ratios differ; targets must have the resolution "
            "of pixel_values"
        )
    all_classes = torch.cat([classes.reshape(-1).long() for classes in class_labels]) if class_labels else None
    if all_classes is not None and all_classes.numel() > 0:
        low, high = all_classes.min().item(), all_classes.max().item()  # one synchronisation for the batch
        if low < 0 or high >= num_labels:
            for index, classes in enumerate(class_labels):
                bad = classes[(classes < 0) | (classes >= num_labels)]
                if bad.numel() > 0:
                    raise ValueError(
                        f"image {index}: class_labels {bad.tolist()} are outside [0, {num_labels}) "
                        f"(num_labels={num_labels}; the 'no object' class {num_labels} is not a valid target)"
                    )


# ----------------------------------------------------------------------------------------------------------------------
# Matcher
# ----------------------------------------------------------------------------------------------------------------------


class HungarianMatcher(nn.Module):
    """One-to-one assignment of targets to queries minimising

        `class_weight * -p(target class) + mask_weight * BCE + dice_weight * dice`,

    both mask costs on the same `num_points` random points per image (shared by predictions and targets), or on every
    target pixel when `num_points` is None. Solved per image with `scipy.optimize.linear_sum_assignment`.
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

    @torch.no_grad()
    def cost_matrices(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
    ) -> list[Tensor]:
        """Per image the `(Q, n_i)` float32 matching cost.

        Args:
            masks_queries_logits: `(B, Q, h, w)` predicted mask logits.
            class_queries_logits: `(B, Q, K + 1)` class logits, "no object" last.
            mask_labels: per image `(n_i, H, W)` target masks.
            class_labels: per image `(n_i,)` target classes.
        """
        batch_size = masks_queries_logits.shape[0]
        device = masks_queries_logits.device
        if self.num_points is None:
            height, width = mask_labels[0].shape[-2:]
            points = pixel_centre_points(height, width, device).expand(batch_size, -1, -1)
        else:
            points = torch.rand(batch_size, self.num_points, 2, device=device)  # one uniform draw per image
        class_probs = class_queries_logits.float().softmax(-1)  # (B, Q, K + 1)

        costs = []
        for index in range(batch_size):
            num_targets = mask_labels[index].shape[0]
            if num_targets == 0:
                costs.append(class_probs.new_zeros(class_probs.shape[1], 0))
                continue
            image_points = points[index : index + 1]  # (1, P, 2)
            pred_masks = masks_queries_logits[index, :, None].float()  # (Q, 1, h, w): queries as the batch is faster
            pred = sample_points(pred_masks, image_points.expand(pred_masks.shape[0], -1, -1))[:, 0]  # (Q, P)
            target = sample_target_points(mask_labels[index], image_points)  # (n, P)
            cost = (
                self.class_weight * -class_probs[index][:, class_labels[index].long()]
                + self.mask_weight * pairwise_sigmoid_bce(pred, target)
                + self.dice_weight * pairwise_dice(pred, target)
            )
            costs.append(torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=-_INVALID_COST))
        return costs

    @torch.no_grad()
    def forward(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
    ) -> MatchIndices:
        """Per image `(query_indices, target_indices)`, int64 on the CPU, query indices ascending."""
        costs = self.cost_matrices(masks_queries_logits, class_queries_logits, mask_labels, class_labels)
        flat = torch.cat([cost.flatten() for cost in costs]).cpu().numpy()  # one device -> host copy per batch
        indices, start = [], 0
        for cost in costs:
            rows, cols = linear_sum_assignment(flat[start : start + cost.numel()].reshape(cost.shape))
            start += cost.numel()
            indices.append((torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))))
        return indices


# ----------------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------------


def average_across_processes(count: float, device: torch.device) -> Tensor:
    """`count` averaged over the processes of the default `torch.distributed` group (itself when not distributed)."""
    value = torch.tensor(float(count), dtype=torch.float32, device=device)
    if not is_distributed():
        return value
    return all_reduce_sum([value])[0] / dist.get_world_size()


class MaskClassificationLoss(nn.Module):
    """EoMT's training loss: Hungarian matching, then per prediction level

    - `loss_mask`: sigmoid BCE of matched masks on `num_points` importance-sampled points (PointRend: of
      `oversample_ratio * num_points` uniform candidates, the `importance_sample_ratio` share with the mask logit
      closest to 0, the rest uniform), summed over masks and divided by `num_masks`;
    - `loss_dice`: dice on the same points, likewise normalised;
    - `loss_cross_entropy`: class cross-entropy over all queries, unmatched ones labelled "no object" (the last class,
      weight `no_object_weight`), a weighted mean.

    `num_masks` is the number of target masks in the batch averaged over processes (all-reduced when
    `torch.distributed` is initialised), at least 1. The final prediction and every intermediate one (deep supervision)
    are matched and supervised separately; the total is `class_weight * CE + mask_weight * BCE + dice_weight * dice`
    summed over levels. Computed in float32, outside autocast.

    `num_points=None` uses every target pixel in the matcher and the loss, without importance sampling: a deterministic
    loss (for tests and exact comparisons), too costly for training at full resolution.
    """

    def __init__(
        self,
        num_labels: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int | None = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
        self.num_labels = num_labels
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        class_weights = torch.ones(num_labels + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    @classmethod
    def from_config(cls, config, **overrides) -> "MaskClassificationLoss":
        """The loss with the coefficients of an `EoMTConfig` (`class_weight`, ..., `train_num_points`); kwargs win."""
        kwargs = dict(
            num_labels=config.num_labels,
            class_weight=config.class_weight,
            mask_weight=config.mask_weight,
            dice_weight=config.dice_weight,
            no_object_weight=config.no_object_weight,
            num_points=config.train_num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

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
                block, first block first (deep supervision); None or empty for none.
            average_num_masks: average `num_masks` across processes (a collective); False uses this batch's count
                alone (evaluation, where processes run different numbers of batches).

        Returns:
            The weighted total loss and the unweighted components: `loss_mask`, `loss_dice`, `loss_cross_entropy` for
            the final prediction and the same with a `_block{i}` suffix for intermediate prediction `i`.
        """
        intermediate_masks = tuple(intermediate_masks_queries_logits or ())
        intermediate_classes = tuple(intermediate_class_queries_logits or ())
        if len(intermediate_masks) != len(intermediate_classes):
            raise ValueError(
                f"got {len(intermediate_masks)} intermediate mask predictions but {len(intermediate_classes)} "
                "intermediate class predictions"
            )
        batch_size, num_queries = masks_queries_logits.shape[:2]
        if class_queries_logits.shape[:2] != (batch_size, num_queries) or class_queries_logits.shape[-1] != self.num_labels + 1:
            raise ValueError(
                f"class_queries_logits has shape {tuple(class_queries_logits.shape)}, expected "
                f"({batch_size}, {num_queries}, {self.num_labels + 1}) (num_labels + 1 with 'no object')"
            )
        check_targets(mask_labels, class_labels, batch_size, self.num_labels, tuple(masks_queries_logits.shape[-2:]))

        num_masks = sum(len(classes) for classes in class_labels)
        if average_num_masks:
            num_masks = average_across_processes(num_masks, masks_queries_logits.device)
        else:
            num_masks = torch.tensor(float(num_masks), device=masks_queries_logits.device)
        num_masks = num_masks.clamp(min=1)
        # Intermediate levels first, then the final one (the order of the random draws of transformers' EoMT loss).
        levels = [(f"_block{i}", masks, classes) for i, (masks, classes) in enumerate(zip(intermediate_masks, intermediate_classes))]
        levels.append(("", masks_queries_logits, class_queries_logits))

        components: dict[str, Tensor] = {}
        total = masks_queries_logits.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=masks_queries_logits.device.type, enabled=False):
            for suffix, masks, classes in levels:
                # Mask logits stay in their dtype: only the sampled points are converted (no float copy of all maps).
                losses = self.level_losses(masks, classes.float(), mask_labels, class_labels, num_masks)
                total = total + self.weighted_sum(losses)
                components.update({f"{name}{suffix}": value for name, value in losses.items()})
        return total, components

    def weighted_sum(self, losses: dict[str, Tensor]) -> Tensor:
        """`class_weight * loss_cross_entropy + mask_weight * loss_mask + dice_weight * loss_dice`."""
        return (
            self.class_weight * losses["loss_cross_entropy"]
            + self.mask_weight * losses["loss_mask"]
            + self.dice_weight * losses["loss_dice"]
        )

    def level_losses(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: Sequence[Tensor],
        class_labels: Sequence[Tensor],
        num_masks: Tensor,
    ) -> dict[str, Tensor]:
        """Unweighted `loss_mask`, `loss_dice` and `loss_cross_entropy` of one prediction level."""
        indices = self.matcher(masks_queries_logits, class_queries_logits, mask_labels, class_labels)
        return {
            **self.mask_losses(masks_queries_logits, mask_labels, indices, num_masks),
            "loss_cross_entropy": self.class_loss(class_queries_logits, class_labels, indices),
        }

    def mask_losses(
        self, masks_queries_logits: Tensor, mask_labels: Sequence[Tensor], indices: MatchIndices, num_masks: Tensor
    ) -> dict[str, Tensor]:
        """BCE and dice of the matched (prediction, target) pairs on sampled points, each summed / `num_masks`."""
        device = masks_queries_logits.device
        batch_index = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(indices)]).to(device)
        query_index = torch.cat([rows for rows, _ in indices]).to(device)
        pred_masks = masks_queries_logits[batch_index, query_index][:, None].float()  # (M, 1, h, w)
        num_matched = pred_masks.shape[0]
        if num_matched == 0:
            zero = masks_queries_logits.sum().float() * 0.0  # keeps the graph: gradients flow (as zeros)
            return {"loss_mask": zero, "loss_dice": zero}

        if self.num_points is None:
            height, width = mask_labels[0].shape[-2:]
            points = pixel_centre_points(height, width, device).expand(num_matched, -1, -1)
        else:
            with torch.no_grad():
                points = self.sample_uncertain_points(pred_masks)  # (M, P, 2)
        with torch.no_grad():
            targets, start = [], 0
            for masks, (_, cols) in zip(mask_labels, indices):
                if len(cols) > 0:
                    matched = masks[cols.to(masks.device)]  # (m_i, H, W)
                    targets.append(sample_target_points(matched, points[start : start + len(cols)]))
                    start += len(cols)
            point_targets = torch.cat(targets)  # (M, P)
        point_logits = sample_points(pred_masks, points)[:, 0]  # (M, P)
        return {
            "loss_mask": sigmoid_bce_per_mask(point_logits, point_targets).sum() / num_masks,
            "loss_dice": dice_per_mask(point_logits, point_targets).sum() / num_masks,
        }

    def sample_uncertain_points(self, mask_logits: Tensor) -> Tensor:
        """PointRend importance sampling for `(M, 1, h, w)` logits -> `(M, num_points, 2)` points: the
        `importance_sample_ratio` most uncertain (|logit| smallest) of `oversample_ratio * num_points` uniform
        candidates, completed with uniform points."""
        num_masks = mask_logits.shape[0]
        num_candidates = int(self.num_points * self.oversample_ratio)
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        candidates = torch.rand(num_masks, num_candidates, 2, device=mask_logits.device)
        uncertainty = -sample_points(mask_logits, candidates)[:, 0].abs()  # (M, num_candidates)
        most_uncertain = uncertainty.topk(num_uncertain, dim=1, sorted=False).indices  # (M, num_uncertain)
        points = candidates.gather(1, most_uncertain[..., None].expand(-1, -1, 2))
        num_random = self.num_points - num_uncertain
        if num_random > 0:
            points = torch.cat((points, torch.rand(num_masks, num_random, 2, device=mask_logits.device)), dim=1)
        return points

    def class_loss(self, class_queries_logits: Tensor, class_labels: Sequence[Tensor], indices: MatchIndices) -> Tensor:
        """Weighted-mean cross-entropy over all queries; unmatched queries target "no object" (`num_labels`)."""
        batch_size, num_queries = class_queries_logits.shape[:2]
        device = class_queries_logits.device
        target_classes = torch.full((batch_size, num_queries), self.num_labels, dtype=torch.long, device=device)
        for index, ((rows, cols), classes) in enumerate(zip(indices, class_labels)):
            if len(rows) > 0:
                target_classes[index, rows.to(device)] = classes.to(device).long()[cols.to(device)]
        return F.cross_entropy(
            class_queries_logits.transpose(1, 2), target_classes, weight=self.class_weights.to(device)
        )
