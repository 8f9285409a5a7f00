"""loss: one evaluation of the training loss over all prediction levels, ours against transformers' `EomtLoss`.

Random logits of `--queries` queries with mask logits of a `--image-size` input (a quarter of its side), and
`TARGETS` disc-shaped target masks per image at the input resolution (as in training) and at the mask-logit
resolution; the loss alone (no gradients) and loss + backward. Both losses are seeded alike before every call, so
they draw the same random points; their values are in the notes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.context import NUM_LABELS, BenchmarkContext
from benchmarks.registry import Result, register_section
from modeling_eomt.loss_eomt import MaskClassificationLoss

LEVELS = 4  # prediction levels: the final one and the intermediate ones
TARGETS = 10  # target masks per image
WEIGHTS = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}  # the authors' weights (also ours)

Inputs = tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]


def loss_inputs(queries: int, mask_size: int, target_size: int, seed: int) -> Inputs:
    """Mask logits `(1, Q, m, m)` and class logits `(1, Q, K + 1)` of each level, one image's target masks
    `(TARGETS, t, t)` (discs) and classes."""
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.randn(1, queries, mask_size, mask_size, generator=generator) * 3 for _ in range(LEVELS)]
    classes = [torch.randn(1, queries, NUM_LABELS + 1, generator=generator) for _ in range(LEVELS)]
    grid = torch.linspace(0, 1, target_size)
    centres = torch.rand(TARGETS, 2, generator=generator)
    radii = torch.rand(TARGETS, generator=generator) * 0.3 + 0.05
    rows = (grid[None, :, None] - centres[:, 0, None, None]) ** 2  # (TARGETS, t, 1)
    cols = (grid[None, None, :] - centres[:, 1, None, None]) ** 2  # (TARGETS, 1, t)
    mask_labels = [rows + cols < radii[:, None, None] ** 2]
    class_labels = [torch.randint(0, NUM_LABELS, (TARGETS,), generator=generator)]
    return masks, classes, mask_labels, class_labels


def ours(inputs: Inputs, backward: bool, seed: int) -> Callable[[], float]:
    masks, classes, mask_labels, class_labels = inputs
    criterion = MaskClassificationLoss(num_labels=NUM_LABELS, num_points=12544)  # transformers' default, like for like

    def run() -> float:
        torch.manual_seed(seed)
        mask_leaves = [m.detach().requires_grad_(backward) for m in masks]
        class_leaves = [c.detach().requires_grad_(backward) for c in classes]
        total, _ = criterion(mask_leaves[-1], class_leaves[-1], mask_labels, class_labels, mask_leaves[:-1],
                             class_leaves[:-1])  # fmt: skip
        if backward:
            total.backward()
        return total.item()

    return run


def reference(inputs: Inputs, backward: bool, seed: int) -> Callable[[], float]:
    from transformers import EomtConfig
    from transformers.models.eomt.modeling_eomt import EomtLoss

    masks, classes, mask_labels, class_labels = inputs
    criterion = EomtLoss(EomtConfig(num_labels=NUM_LABELS), WEIGHTS)
    float_labels = [m.float() for m in mask_labels]

    def run() -> float:
        torch.manual_seed(seed)
        total = 0.0
        for m, c in zip(masks, classes):
            m, c = m.detach().requires_grad_(backward), c.detach().requires_grad_(backward)
            losses = criterion(m, c, float_labels, class_labels)
            total = total + sum(WEIGHTS[name] * value for name, value in losses.items())
        if backward:
            total.backward()
        return total.item()

    return run


@register_section("loss", "training loss over all prediction levels, ours vs transformers' EomtLoss", in_all=False)
def loss_section(context: BenchmarkContext) -> list[Result]:
    args = context.args
    mask_size = args.image_size // 4
    results = []
    for target_size in (args.image_size, mask_size):
        inputs = loss_inputs(args.queries, mask_size, target_size, args.seed)
        for backward in (False, True):
            seed = args.seed
            candidates = {"ours": ours(inputs, backward, seed), "reference": reference(inputs, backward, seed)}
            values = {name: run() for name, run in candidates.items()}
            name = "loss + backward" if backward else "loss"
            times = context.time(candidates, f"{name}, {target_size}px targets")
            results.append(
                Result.timed(
                    "loss",
                    f"{name}, {args.queries} queries, {LEVELS} levels, {TARGETS} targets of {target_size}px",
                    times["ours"],
                    times["reference"],
                    notes=f"loss value: ours {values['ours']:.5f}, transformers {values['reference']:.5f}",
                    extra={"values": values},
                )
            )
    return results
