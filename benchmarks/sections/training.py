"""training: one training step (forward with intermediate predictions, loss, backward, AdamW) and its peak memory."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.context import NUM_LABELS, BenchmarkContext, ModelPair, build_config, build_model_pair
from benchmarks.measure import MEMORY_PROBE_ENV, Stats, peak_rss_delta, run_in_fresh_process
from benchmarks.registry import Result, register_section
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation

# The options of a training step, passed on to the fresh process that measures its memory.
STEP_OPTIONS = ("size", "threads", "seed", "train_image_size", "train_batch_size", "train_queries", "train_mask_prob")


def random_targets(
    batch_size: int, image_size: int, num_masks: int, seed: int, device: torch.device
) -> tuple[list[Tensor], list[Tensor]]:
    """Per image `num_masks` random binary masks `(n, H, W)` and their classes `(n,)`."""
    generator = torch.Generator().manual_seed(seed)
    masks = [
        (torch.rand(num_masks, image_size, image_size, generator=generator) > 0.5).float().to(device)
        for _ in range(batch_size)
    ]
    classes = [torch.randint(0, NUM_LABELS, (num_masks,), generator=generator).to(device) for _ in range(batch_size)]
    return masks, classes


def enable_activation_checkpointing(model: nn.Module) -> None:
    """`model.activation_checkpointing_enable()` (`gradient_checkpointing_enable` in older transformers 5 releases)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def build_training_loss(config: EoMTConfig) -> tuple[Callable[..., Tensor], str]:
    """The loss of the training step, `modeling_eomt.loss_eomt.MaskClassificationLoss` (Hungarian matching, point-sampled
    BCE / dice, class CE; the total only), and its name; both models get the same loss and the same targets."""
    from modeling_eomt.loss_eomt import MaskClassificationLoss

    criterion = MaskClassificationLoss.from_config(config)

    def loss(*args: Any) -> Tensor:
        return criterion(*args)[0]

    return loss, "modeling_eomt.loss_eomt.MaskClassificationLoss"


class RecordedPredictions:
    """Wraps transformers' `predict` to keep every prediction of a forward pass: it computes the intermediate ones in
    training but returns only the final one without labels (and labels would run its own, different loss)."""

    def __init__(self, model: nn.Module) -> None:
        self.predictions: list[tuple[Tensor, Tensor]] = []
        self.predict = model.predict
        model.predict = self

    def __call__(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        self.predictions.append(self.predict(tokens))
        return self.predictions[-1]

    def pop_all(self) -> list[tuple[Tensor, Tensor]]:
        predictions, self.predictions = self.predictions, []
        return predictions


def training_step_function(
    model: nn.Module, pixel_values: Tensor, targets: tuple[list[Tensor], list[Tensor]], loss: Callable[..., Tensor]
) -> Callable[[], None]:
    """One step: zero the gradients, forward in train mode (with intermediate predictions), loss, backward, AdamW."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    recorder = RecordedPredictions(model) if not isinstance(model, EoMTForUniversalSegmentation) else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        outputs = model(pixel_values)
        if recorder is None:
            intermediate = (outputs.intermediate_masks_queries_logits, outputs.intermediate_class_queries_logits)
            final = (outputs.masks_queries_logits, outputs.class_queries_logits)
        else:
            *levels, final = recorder.pop_all()
            intermediate = ([masks for masks, _ in levels], [classes for _, classes in levels])
        loss(*final, *targets, *intermediate).backward()
        optimizer.step()

    return step


def training_setup(
    args: argparse.Namespace, device: torch.device, config_overrides: dict[str, Any] | None = None
) -> tuple[ModelPair, Tensor, tuple, Callable[..., Tensor], str]:
    config = build_config(args.size, args.train_image_size, args.train_queries, **(config_overrides or {}))
    pair = build_model_pair(config, device, args.seed)
    pair.set_mask_probability(args.train_mask_prob)
    generator = torch.Generator().manual_seed(args.seed)
    pixel_values = torch.randn(
        args.train_batch_size, 3, args.train_image_size, args.train_image_size, generator=generator
    ).to(device)
    targets = random_targets(args.train_batch_size, args.train_image_size, 5, args.seed, device)
    loss, loss_name = build_training_loss(pair.config)
    return pair, pixel_values, targets, loss, loss_name


def step_peak_memory(
    which: str, memory_repeats: int, config_overrides: dict[str, Any] | None = None, **options: Any
) -> list[int]:
    """Run in a fresh process (`run_in_fresh_process`): the peak memory of one model's training step, `which` one of
    "ours", "reference", "ours-checkpointing"; `options` are the `STEP_OPTIONS`, `config_overrides` the run's."""
    args = argparse.Namespace(**options)
    torch.set_num_threads(args.threads)
    pair, pixel_values, targets, loss, _ = training_setup(args, torch.device("cpu"), config_overrides)
    model = pair.ours if which.startswith("ours") else pair.reference
    del pair
    if which == "ours-checkpointing":
        enable_activation_checkpointing(model)
    step = training_step_function(model, pixel_values, targets, loss)
    step()  # creates the gradients and the AdamW moments: part of the baseline, not of the peak
    return peak_rss_delta(step, repeats=memory_repeats)


def step_peak_memory_in_fresh_process(
    args: argparse.Namespace, which: str, config_overrides: dict[str, Any] | None = None
) -> list[int]:
    """`step_peak_memory(which, ...)` for the step of `args` (and `config_overrides`), in a fresh process."""
    options = {name: getattr(args, name) for name in STEP_OPTIONS}
    arguments = {"which": which, "memory_repeats": args.memory_repeats, "config_overrides": config_overrides, **options}
    return run_in_fresh_process(f"{__name__}:step_peak_memory", arguments, env=MEMORY_PROBE_ENV)


def cuda_peak_memory(step: Callable[[], None], repeats: int) -> list[int]:
    """Bytes the CUDA caching allocator's peak rises above its allocation before `step` (after one untimed step)."""
    step()
    peaks = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - baseline)
    return peaks


@register_section(
    "training", "training step (forward with intermediate predictions, loss, backward, AdamW) and peak memory"
)
def training_section(context: BenchmarkContext) -> list[Result]:
    args = context.args
    pair, pixel_values, targets, loss, loss_name = training_setup(args, context.device, context.config_overrides)
    checkpointed = EoMTForUniversalSegmentation(pair.config).to(context.device)
    checkpointed.load_state_dict(pair.ours.state_dict())
    enable_activation_checkpointing(checkpointed)
    steps = {
        "ours": training_step_function(pair.ours, pixel_values, targets, loss),
        "reference": training_step_function(pair.reference, pixel_values, targets, loss),
        "ours-checkpointing": training_step_function(checkpointed, pixel_values, targets, loss),
    }
    times = context.time(steps, "training step")
    shape = (
        f"{args.size}/16, {args.train_image_size}px, batch {args.train_batch_size}, {args.train_queries} queries, "
        f"p = {args.train_mask_prob:g}"
    )
    results = [
        Result.timed(
            "training",
            f"step ({shape})",
            times["ours"],
            times["reference"],
            notes=loss_name,
        ),
        Result.timed(
            "training",
            "step, ours with activation checkpointing",
            times["ours-checkpointing"],
            times["reference"],
            notes="model.activation_checkpointing_enable()",
        ),
    ]

    if context.device.type == "cuda":
        peaks = {name: cuda_peak_memory(step, args.memory_repeats) for name, step in steps.items()}
        note = "peak of torch.cuda.max_memory_allocated during a step above the allocation before it"
    elif Path("/proc/self/clear_refs").exists():
        del pair, checkpointed, steps  # the probes run in fresh processes
        peaks = {name: step_peak_memory_in_fresh_process(args, name, context.config_overrides) for name in times}
        note = (
            "peak RSS (VmHWM) during a step above the RSS before it, in a fresh process; weights, gradients and "
            "AdamW state excluded"
        )
    else:
        return results
    for name, case in (
        ("ours", "peak memory of a step"),
        ("ours-checkpointing", "peak memory, ours with activation checkpointing"),
    ):
        ratio = Stats.of([statistics.median(peaks[name]) / statistics.median(peaks["reference"])])
        results.append(
            Result(
                "training", case, Stats.of(peaks[name]), Stats.of(peaks["reference"]), ratio, unit="bytes", notes=note
            )
        )
    return results
