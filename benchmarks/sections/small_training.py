"""The training step of a small model on small images, where the loss (matching, point sampling) weighs most: ours
(`EoMTForUniversalSegmentation` + `modeling_eomt.loss_eomt.MaskClassificationLoss`) against transformers'
`EomtForUniversalSegmentation` with the loss its `forward` computes (`EomtLoss`), same weights, same data.

    eomt benchmark --sections small-training --clock cpu

The default shape is a from-scratch run on a small panoptic set: ViT 192 wide, 6 blocks, patch 8, 128 px images
(64x64 mask logits), batch 8, 24 queries, 2 masked blocks (3 supervised prediction levels), 3 thing + 3 stuff classes,
6-10 target masks per image. Rows: the step (forward, loss, backward, AdamW), the loss with its backward alone on the
same predictions (ours with its default points per mask, and with transformers' `train_num_points`), and the share of
the step spent in the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.context import BenchmarkContext, build_model_pair
from benchmarks.measure import Stats, paired_ratios
from benchmarks.registry import Result, register_section
from modeling_eomt import EoMTConfig
from modeling_eomt.loss_eomt import MaskClassificationLoss

SMALL_MODEL = dict(
    hidden_size=192, num_hidden_layers=6, num_attention_heads=3, patch_size=8, image_size=128, num_register_tokens=0,
    num_queries=24, num_blocks=2, num_upscale_blocks=2, num_labels=6,
)  # fmt: skip
BATCH_SIZE = 8
TARGETS_PER_IMAGE = (6, 10)


def small_model_config(**overrides: Any) -> EoMTConfig:
    """The benchmark's small model (`SMALL_MODEL`); `overrides` change any `EoMTConfig` field."""
    return EoMTConfig(**{**SMALL_MODEL, **overrides})


def disc_targets(batch_size: int, size: int, num_labels: int, seed: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per image `TARGETS_PER_IMAGE` (inclusive range) random discs `(n, size, size)` (bool) and their classes."""
    generator = torch.Generator().manual_seed(seed)
    coordinates = (torch.arange(size) + 0.5) / size
    mask_labels, class_labels = [], []
    for _ in range(batch_size):
        count = int(torch.randint(TARGETS_PER_IMAGE[0], TARGETS_PER_IMAGE[1] + 1, (1,), generator=generator))
        centres = torch.rand(count, 2, generator=generator)
        radii = torch.rand(count, generator=generator) * 0.3 + 0.05
        squared = (coordinates[None, :, None] - centres[:, 1, None, None]) ** 2
        squared = squared + (coordinates[None, None, :] - centres[:, 0, None, None]) ** 2
        mask_labels.append(squared < radii[:, None, None] ** 2)
        class_labels.append(torch.randint(0, num_labels, (count,), generator=generator))
    return mask_labels, class_labels


def ours_loss(criterion: MaskClassificationLoss) -> Callable[..., Tensor]:
    """`(final masks, final classes, mask_labels, class_labels, intermediate masks, intermediate classes) -> total`."""

    def loss(masks, classes, mask_labels, class_labels, intermediate_masks, intermediate_classes) -> Tensor:
        return criterion(masks, classes, mask_labels, class_labels, intermediate_masks, intermediate_classes)[0]

    return loss


def reference_loss(reference: nn.Module) -> Callable[..., Tensor]:
    """transformers' loss as its `forward` computes it: `EomtLoss` per level, weighted and summed (float masks)."""

    def loss(masks, classes, mask_labels, class_labels, intermediate_masks, intermediate_classes) -> Tensor:
        total = 0.0
        for level_masks, level_classes in zip((*intermediate_masks, masks), (*intermediate_classes, classes)):
            losses = reference.get_loss_dict(level_masks, level_classes, mask_labels, class_labels, None)
            total = total + reference.get_loss(losses)
        return total

    return loss


def measure_training_step(
    ours: nn.Module,
    reference: nn.Module,
    time_candidates: Callable[[dict[str, Callable[[], object]], str], dict[str, list[float]]],
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time the training step of `ours` and of `reference` (transformers' EoMT with the same weights), and their losses
    alone on the same predictions, with `time_candidates` (interleaved timing: `{name: function}, description ->
    {name: seconds}`). Returns report rows: dicts of `section`, `case`, `ours`, `reference`, `ratio`, `unit`, `notes`.
    """
    config = ours.config
    device = next(ours.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    side = config.image_size
    pixel_values = torch.randn(batch_size, config.num_channels, side, side, generator=generator).to(device)
    mask_labels, class_labels = disc_targets(batch_size, side, config.num_labels, seed)
    mask_labels, class_labels = [m.to(device) for m in mask_labels], [c.to(device) for c in class_labels]
    for model in (ours, reference):
        model.train()
        model.attn_mask_probs.fill_(1.0)  # the start of mask annealing: every masked block and prediction level

    criterion = MaskClassificationLoss.from_config(config).to(device)
    like_for_like = MaskClassificationLoss.from_config(config, num_points=config.train_num_points).to(device)
    mask_size = (side // config.patch_size * 2**config.num_upscale_blocks,) * 2
    num_points = criterion.points_per_mask(mask_size)

    def step(model: nn.Module, forward_and_loss: Callable[[], Tensor]) -> Callable[[], None]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            forward_and_loss().backward()
            optimizer.step()

        return run

    def ours_forward_and_loss() -> Tensor:
        out = ours(pixel_values)
        levels = (out.intermediate_masks_queries_logits, out.intermediate_class_queries_logits)
        return criterion(out.masks_queries_logits, out.class_queries_logits, mask_labels, class_labels, *levels)[0]

    float_labels = [labels.float() for labels in mask_labels]  # transformers' EoMT takes float masks

    def reference_forward_and_loss() -> Tensor:
        return reference(pixel_values, mask_labels=float_labels, class_labels=class_labels).loss

    with torch.no_grad():
        out = ours(pixel_values)
    predictions = (out.masks_queries_logits, out.class_queries_logits)
    intermediate = (out.intermediate_masks_queries_logits, out.intermediate_class_queries_logits)

    def loss_alone(loss: Callable[..., Tensor], labels: list[Tensor]) -> Callable[[], None]:
        def run() -> None:
            masks, classes = (tensor.detach().requires_grad_(True) for tensor in predictions)
            levels = [[tensor.detach().requires_grad_(True) for tensor in group] for group in intermediate]
            loss(masks, classes, labels, class_labels, *levels).backward()

        return run

    times = time_candidates(
        {
            "ours step": step(ours, ours_forward_and_loss),
            "reference step": step(reference, reference_forward_and_loss),
            "ours loss": loss_alone(ours_loss(criterion), mask_labels),
            "ours loss, transformers' points": loss_alone(ours_loss(like_for_like), mask_labels),
            "reference loss": loss_alone(reference_loss(reference), float_labels),
        },
        "small-model training step",
    )
    shares = {name: [loss / step for loss, step in zip(times[f"{name} loss"], times[f"{name} step"])]
              for name in ("ours", "reference")}  # fmt: skip
    shape = (
        f"ViT {config.hidden_size}x{config.num_hidden_layers}, patch {config.patch_size}, {side}px, "
        f"batch {batch_size}, {config.num_queries} queries, {config.num_blocks + 1} levels"
    )
    points = (
        f"ours {num_points} points per mask ({mask_size[0]}x{mask_size[1]} mask logits), "
        f"transformers {config.train_num_points}"
    )

    def row(case: str, ours_name: str, reference_name: str, notes: str, unit: str = "s") -> dict[str, Any]:
        ours_samples, reference_samples = samples[ours_name], samples[reference_name]
        return dict(
            section="small-training",
            case=case,
            ours=Stats.of(ours_samples),
            reference=Stats.of(reference_samples),
            ratio=paired_ratios(ours_samples, reference_samples),
            unit=unit,
            notes=notes,
        )

    samples = {**times, **{f"{name} share": shares[name] for name in shares}}
    return [
        row(f"step ({shape})", "ours step", "reference step", "forward, loss, backward, AdamW; " + points),
        row("loss + its backward", "ours loss", "reference loss", "matching included, same predictions; " + points),
        row(
            "loss + its backward, transformers' points",
            "ours loss, transformers' points",
            "reference loss",
            f"both {config.train_num_points} points per mask",
        ),
        row(
            "loss share of the step",
            "ours share",
            "reference share",
            f"loss + its backward / step: ours {percent(shares['ours'])}, transformers {percent(shares['reference'])}",
            unit="share",
        ),
    ]


def percent(samples: list[float]) -> str:
    """The median of `samples` (fractions) in percent."""
    return f"{100 * Stats.of(samples).median:.0f}%"


@register_section("small-training", "training step of a small model on small images, where the loss weighs most")
def small_training_section(context: BenchmarkContext) -> list[Result]:
    pair = build_model_pair(small_model_config(**context.config_overrides), context.device, context.args.seed)
    rows = measure_training_step(pair.ours, pair.reference, context.time, seed=context.args.seed)
    return [Result(**row) for row in rows]
