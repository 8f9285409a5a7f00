"""Speed and memory of this package's EoMT against transformers' `EomtForUniversalSegmentation`, side by side.

Both models are built in one process with the same random weights (converted with `modeling_eomt.conversion`), checked
to give the same outputs, and timed interleaved (ours, theirs, theirs, ours, ...) so that background load hits both
alike; the ratios ours / transformers are medians of per-repetition ratios, with their interquartile range.

    python -m benchmarks.benchmark                      # every CPU section, ViT-S/16, 2 threads, wall clock
    python -m benchmarks.benchmark --sections forward,training --repeats 9 --out results.json
    OMP_WAIT_POLICY=PASSIVE eomt benchmark --clock cpu  # steadier on a machine shared with other jobs
    eomt benchmark --device cuda --sections gpu-fps     # FPS of ViT-S/B/L in bf16 with torch.compile

Sections: forward (mask-free and masked), end-to-end (image -> panoptic), post-processing, training (step time, peak
memory), throughput (GFLOP/s against the matmul ceiling), fast (bf16, torch.compile), gpu-fps (CUDA only) and, on
request, profile (operator times). A new section is a function `(context) -> list[Result]` under `register_section`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.learning import learning_section
from benchmarks.measure import (
    Stats,
    count_flops,
    cpu_clock,
    paired_ratios,
    peak_rss_delta,
    run_memory_probe,
    time_interleaved,
)
from benchmarks.options import add_benchmark_arguments
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.conversion import config_to_transformers_eomt, state_dict_to_transformers_eomt

NUM_LABELS = 133  # COCO panoptic


# ----------------------------------------------------------------------------------------------------------------------
# Results and the section registry
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the report: times in seconds, memory in bytes; `ratio` is ours / transformers (interleaved runs)."""

    section: str
    case: str
    ours: Stats | None = None
    reference: Stats | None = None
    ratio: Stats | None = None
    unit: str = "s"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "case": self.case,
            "unit": self.unit,
            "ours": self.ours.to_dict() if self.ours else None,
            "reference": self.reference.to_dict() if self.reference else None,
            "ratio": self.ratio.to_dict() if self.ratio else None,
            "notes": self.notes,
            **self.extra,
        }


@dataclass
class Section:
    key: str
    title: str
    run: Callable[["BenchmarkContext"], list[Result]]
    cuda_only: bool = False
    in_all: bool = True


SECTIONS: dict[str, Section] = {}


def register_section(key: str, title: str, cuda_only: bool = False, in_all: bool = True) -> Callable:
    """Decorator adding `function(context) -> list[Result]` to the benchmark under `key` (run in registration order);
    `in_all=False` sections run only when `--sections` names them."""

    def decorator(function: Callable[["BenchmarkContext"], list[Result]]) -> Callable:
        SECTIONS[key] = Section(key, title, function, cuda_only, in_all)
        return function

    return decorator


# ----------------------------------------------------------------------------------------------------------------------
# Models with the same weights
# ----------------------------------------------------------------------------------------------------------------------


def build_config(size: str, image_size: int, num_queries: int, **overrides: Any) -> EoMTConfig:
    """ViT-`size`/16 with `num_queries` queries and the COCO panoptic classes; `overrides` change any other field."""
    fields = dict(image_size=image_size, num_queries=num_queries, num_labels=NUM_LABELS)
    return EoMTConfig.from_size(size, **{**fields, **overrides})


def build_reference(ours: EoMTForUniversalSegmentation) -> nn.Module:
    """transformers' `EomtForUniversalSegmentation` with `ours`' weights."""
    from transformers import EomtConfig, EomtForUniversalSegmentation

    reference = EomtForUniversalSegmentation(EomtConfig.from_dict(config_to_transformers_eomt(ours.config)))
    reference.load_state_dict(state_dict_to_transformers_eomt(ours.state_dict(), ours.config), strict=True)
    return reference.to(ours.device)


@dataclass
class ModelPair:
    ours: EoMTForUniversalSegmentation
    reference: nn.Module

    @property
    def config(self) -> EoMTConfig:
        return self.ours.config

    def set_mask_probability(self, probability: float) -> None:
        self.ours.attn_mask_probs.fill_(probability)
        self.reference.attn_mask_probs.fill_(probability)


def build_model_pair(config: EoMTConfig, device: torch.device, seed: int = 0) -> ModelPair:
    torch.manual_seed(seed)
    ours = EoMTForUniversalSegmentation(config).to(device)
    return ModelPair(ours, build_reference(ours))


# ----------------------------------------------------------------------------------------------------------------------
# Context shared by the sections
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkContext:
    args: argparse.Namespace
    device: torch.device
    config_overrides: dict[str, Any] = field(default_factory=dict)
    _pairs: dict[tuple, ModelPair] = field(default_factory=dict)

    @property
    def repeats(self) -> int:
        return self.args.repeats

    @property
    def warmup(self) -> int:
        return self.args.warmup

    def model_pair(
        self, image_size: int | None = None, num_queries: int | None = None, size: str | None = None
    ) -> ModelPair:
        """The (cached) pair for the given shape; defaults: `--size`, `--image-size`, `--queries`."""
        key = (size or self.args.size, image_size or self.args.image_size, num_queries or self.args.queries)
        if key not in self._pairs:
            self._pairs.clear()  # one pair at a time keeps the memory of large sizes in check
            self._pairs[key] = build_model_pair(
                build_config(*key, **self.config_overrides), self.device, self.args.seed
            )
        return self._pairs[key]

    def inference_pair(self, mask_probability: float = 0.0, **shape: Any) -> ModelPair:
        """`model_pair(**shape)` in eval mode with every `attn_mask_probs` set to `mask_probability`."""
        pair = self.model_pair(**shape)
        pair.ours.eval(), pair.reference.eval()
        pair.set_mask_probability(mask_probability)
        return pair

    def images(self, batch_size: int, image_size: int | None = None) -> Tensor:
        side = image_size or self.args.image_size
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.randn(batch_size, 3, side, side, generator=generator).to(self.device)

    def time(self, candidates: dict[str, Callable[[], object]], description: str) -> dict[str, list[float]]:
        clock = cpu_clock(self.args.threads) if self.args.clock == "cpu" else time.perf_counter
        return time_interleaved(candidates, self.repeats, self.warmup, self.device, description, clock)


def max_output_difference(pair: ModelPair, pixel_values: Tensor) -> float:
    """Largest absolute difference of the two models' class and mask logits (a check that both compute the same)."""
    with torch.inference_mode():
        ours, reference = pair.ours(pixel_values), pair.reference(pixel_values)
    return max(
        (ours.class_queries_logits.float() - reference.class_queries_logits.float()).abs().max().item(),
        (ours.masks_queries_logits.float() - reference.masks_queries_logits.float()).abs().max().item(),
    )


def inference(model: nn.Module, pixel_values: Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(pixel_values)

    return run


# ----------------------------------------------------------------------------------------------------------------------
# (1), (2): forward latency, mask-free and with masked attention
# ----------------------------------------------------------------------------------------------------------------------


@register_section("forward", "forward latency, batch 1, mask-free (p = 0) and masked attention (p = 1)")
def forward_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    differences = {}
    for probability in (0.0, 1.0):
        pair.set_mask_probability(probability)
        differences[probability] = max_output_difference(pair, pixel_values)

    def at_probability(model: nn.Module, probability: float) -> Callable[[], object]:
        run = inference(model, pixel_values)

        def run_at() -> object:
            model.attn_mask_probs.fill_(probability)
            return run()

        return run_at

    times = context.time(
        {
            "ours mask-free": at_probability(pair.ours, 0.0),
            "reference mask-free": at_probability(pair.reference, 0.0),
            "ours masked": at_probability(pair.ours, 1.0),
            "reference masked": at_probability(pair.reference, 1.0),
        },
        "forward",
    )
    shape = f"{context.args.size}/16, {context.args.image_size}px, {context.args.queries} queries"
    results = []
    for probability, name in ((0.0, "mask-free"), (1.0, "masked")):
        results.append(
            Result(
                "forward",
                f"{name} ({shape})",
                Stats.of(times[f"ours {name}"]),
                Stats.of(times[f"reference {name}"]),
                paired_ratios(times[f"ours {name}"], times[f"reference {name}"]),
                notes=f"max |ours - transformers| = {differences[probability]:.1e}",
                extra={"max_abs_difference": differences[probability]},
            )
        )
    results.append(
        Result(
            "forward",
            "masked / mask-free, ours",
            ratio=paired_ratios(times["ours masked"], times["ours mask-free"]),
            unit="ratio",
            notes="cost of masked attention at inference (transformers: "
            f"{paired_ratios(times['reference masked'], times['reference mask-free']).median:.2f})",
        )
    )
    return results


# ----------------------------------------------------------------------------------------------------------------------
# (3), (4): end to end and post-processing (need the image processor)
# ----------------------------------------------------------------------------------------------------------------------


def random_photos(count: int, height: int, width: int, seed: int) -> list:
    """`count` random RGB PIL images."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def panoptic_pipeline(processor: Any, model: nn.Module, images: list, device: torch.device) -> Callable[[], list[dict]]:
    """Images -> `processor` -> `model` -> `processor.post_process_panoptic_segmentation`, without gradients."""
    sizes = [(image.height, image.width) for image in images]

    def run() -> list[dict]:
        with torch.inference_mode():
            inputs = processor(images, return_tensors="pt")
            outputs = model(inputs["pixel_values"].to(device))
            return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes)

    return run


@register_section("end-to-end", "image -> panoptic result (pre-processing, forward, post-processing), batch 1 and 8")
def end_to_end_section(context: BenchmarkContext) -> list[Result]:
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    from image_processing import EoMTImageProcessor

    side = context.args.image_size
    pair = context.inference_pair()
    settings = {"size": {"shortest_edge": side, "longest_edge": side}, "do_pad": True}
    ours_processor, reference_processor = EoMTImageProcessor(**settings), EomtImageProcessorPil(**settings)
    bf16 = fast_copy(pair, torch.bfloat16)
    results = []
    for batch_size in (int(size) for size in context.args.e2e_batch_sizes.split(",")):
        images = random_photos(batch_size, side * 3 // 4, side, context.args.seed)  # COCO-like 4:3, padded to square
        candidates = {
            "ours": panoptic_pipeline(ours_processor, pair.ours, images, context.device),
            "reference": panoptic_pipeline(reference_processor, pair.reference, images, context.device),
            "ours bf16": panoptic_pipeline(ours_processor, bf16, images, context.device),
        }
        ours_maps = [result["segmentation"] for result in candidates["ours"]()]
        reference_maps = [result["segmentation"] for result in candidates["reference"]()]
        agreement = torch.stack([(a == b).float().mean() for a, b in zip(ours_maps, reference_maps)]).mean().item()
        times = context.time(candidates, f"end to end, batch {batch_size}")
        case = f"image -> panoptic, batch {batch_size} ({side * 3 // 4}x{side} images)"
        for name, notes in (
            (
                "ours",
                f"EoMTImageProcessor vs EomtImageProcessorPil, fp32; {agreement:.1%} of pixels agree (random weights)",
            ),
            ("ours bf16", "ours with enable_fast_inference(torch.bfloat16) vs transformers fp32"),
        ):
            results.append(
                Result(
                    "end-to-end",
                    case if name == "ours" else f"{case}, ours bf16",
                    Stats.of(times[name]),
                    Stats.of(times["reference"]),
                    paired_ratios(times[name], times["reference"]),
                    notes=notes,
                )
            )
    return results


@register_section("post-processing", "post-processing alone, each task (benchmarks.postprocessing)")
def post_processing_section(context: BenchmarkContext) -> list[Result]:
    from benchmarks.postprocessing import run_postprocessing_benchmark

    args = context.args
    report = run_postprocessing_benchmark(
        batch_sizes=(1, 2),
        num_queries=args.queries,
        input_size=args.image_size,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        seed=args.seed,
    )
    return [
        Result(
            "post-processing",
            f"{row['task']}, batch {row['batch_size']}",
            Stats.of([row["ours_ms"] / 1000]),
            Stats.of([row["transformers_ms"] / 1000]),
            Stats.of([row["ratio"]]),
            notes=f"medians only; same output: {'yes' if row['same_output'] else 'NO'}",
        )
        for row in report["results"]
    ]


# ----------------------------------------------------------------------------------------------------------------------
# (5): one training step and its peak memory
# ----------------------------------------------------------------------------------------------------------------------


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


def build_training_loss(config: EoMTConfig) -> tuple[Callable[..., Tensor], str]:
    """The loss of the training step, `training.loss.MaskClassificationLoss` (Hungarian matching, point-sampled
    BCE / dice, class CE; the total only), and its name; both models get the same loss and the same targets."""
    from training.loss import MaskClassificationLoss

    criterion = MaskClassificationLoss.from_config(config)

    def loss(*args: Any) -> Tensor:
        return criterion(*args)[0]

    return loss, "training.loss.MaskClassificationLoss"


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


def memory_probe(args: argparse.Namespace) -> None:
    """Entry point of the fresh process that measures one model's training-step peak memory (prints one JSON line)."""
    torch.set_num_threads(args.threads)
    pair, pixel_values, targets, loss, _ = training_setup(args, torch.device("cpu"))
    model = pair.ours if args.memory_probe.startswith("ours") else pair.reference
    del pair
    if args.memory_probe == "ours-checkpointing":
        model.activation_checkpointing_enable()
    step = training_step_function(model, pixel_values, targets, loss)
    step()  # creates the gradients and the AdamW moments: part of the baseline, not of the peak
    print(json.dumps({"peak_delta_bytes": peak_rss_delta(step, repeats=args.memory_repeats)}))


def memory_probe_arguments(args: argparse.Namespace, which: str) -> list[str]:
    """Command-line arguments of the fresh process that measures `which` ("ours", "reference", "ours-checkpointing")."""
    options = {
        "--memory-probe": which,
        "--size": args.size,
        "--threads": args.threads,
        "--seed": args.seed,
        "--train-image-size": args.train_image_size,
        "--train-batch-size": args.train_batch_size,
        "--train-queries": args.train_queries,
        "--train-mask-prob": args.train_mask_prob,
        "--memory-repeats": args.memory_repeats,
    }
    return [str(item) for option in options.items() for item in option]


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
    checkpointed.activation_checkpointing_enable()
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
        Result(
            "training",
            f"step ({shape})",
            Stats.of(times["ours"]),
            Stats.of(times["reference"]),
            paired_ratios(times["ours"], times["reference"]),
            notes=loss_name,
        ),
        Result(
            "training",
            "step, ours with activation checkpointing",
            Stats.of(times["ours-checkpointing"]),
            Stats.of(times["reference"]),
            paired_ratios(times["ours-checkpointing"], times["reference"]),
            notes="model.activation_checkpointing_enable()",
        ),
    ]

    if context.device.type == "cuda":
        peaks = {name: cuda_peak_memory(step, args.memory_repeats) for name, step in steps.items()}
        note = "peak of torch.cuda.max_memory_allocated during a step above the allocation before it"
    elif Path("/proc/self/clear_refs").exists():
        del pair, checkpointed, steps  # the probes run in fresh processes
        peaks = {name: run_memory_probe(memory_probe_arguments(args, name))["peak_delta_bytes"] for name in times}
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


# ----------------------------------------------------------------------------------------------------------------------
# (6): achieved GFLOP/s against the measured matmul ceiling
# ----------------------------------------------------------------------------------------------------------------------


@register_section("throughput", "achieved GFLOP/s against the measured fp32 matmul throughput (mask-free, batch 1)")
def throughput_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    with torch.inference_mode():
        model_flops = count_flops(lambda: pair.ours(pixel_values))
        encoder_flops = count_flops(lambda: pair.ours.eomt(pixel_values))
    size = context.args.matmul_size
    a, b = (torch.randn(size, size, device=context.device) for _ in range(2))
    times = context.time(
        {
            "matmul": lambda: torch.mm(a, b),
            "ours encoder": inference(pair.ours.eomt, pixel_values),
            "ours": inference(pair.ours, pixel_values),
            "reference": inference(pair.reference, pixel_values),
        },
        "throughput",
    )
    ceiling = [2 * size**3 / seconds for seconds in times["matmul"]]

    def achieved(flops: int, name: str) -> Stats:
        return Stats.of([flops / seconds for seconds in times[name]])

    def fraction_of_ceiling(flops: int, name: str) -> Stats:
        return Stats.of([flops / seconds / peak for seconds, peak in zip(times[name], ceiling)])

    matmul_note = f"torch.mm {size}x{size} fp32, {context.args.threads} threads"
    return [
        Result("throughput", "matmul ceiling", Stats.of(ceiling), unit="FLOP/s", notes=matmul_note),
        Result(
            "throughput",
            f"model ({model_flops / 1e9:.1f} GFLOP)",
            achieved(model_flops, "ours"),
            achieved(model_flops, "reference"),
            paired_ratios(times["reference"], times["ours"]),
            unit="FLOP/s",
            notes=f"fraction of ceiling: ours {fraction_of_ceiling(model_flops, 'ours').median:.2f}, "
            f"transformers {fraction_of_ceiling(model_flops, 'reference').median:.2f}",
        ),
        Result(
            "throughput",
            f"encoder ({encoder_flops / 1e9:.1f} GFLOP), fraction of ceiling",
            fraction_of_ceiling(encoder_flops, "ours encoder"),
            unit="fraction",
            notes="matmuls, convolutions and attention counted by FlopCounterMode; norms and activations not",
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Fast inference options (bf16 autocast, torch.compile)
# ----------------------------------------------------------------------------------------------------------------------


def autocast_inference(model: nn.Module, pixel_values: Tensor, dtype: torch.dtype) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode(), torch.autocast(pixel_values.device.type, dtype=dtype):
            return model(pixel_values)

    return run


def fast_copy(pair: ModelPair, dtype: torch.dtype | None, compile: bool = False) -> EoMTForUniversalSegmentation:
    """A copy of our model with `enable_fast_inference(dtype, compile)`."""
    model = EoMTForUniversalSegmentation(pair.config).to(pair.ours.device)
    model.load_state_dict(pair.ours.state_dict())
    return model.enable_fast_inference(dtype, compile=compile)


def first_call_seconds(run: Callable[[], object]) -> float:
    """Seconds of `run()` once: the compilation of a compiled model."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def relative_difference(run: Callable[[], Any], expected: Tensor) -> float:
    """Largest |mask logit - expected| over the largest |expected|."""
    actual = run().masks_queries_logits.float()
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@register_section("fast", "fast inference options against transformers in float32 (mask-free, batch 1)")
def fast_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    candidates = {
        "reference": inference(pair.reference, pixel_values),
        "ours": inference(pair.ours, pixel_values),
        "ours bf16": inference(fast_copy(pair, torch.bfloat16), pixel_values),
        "reference bf16": autocast_inference(pair.reference, pixel_values, torch.bfloat16),
    }
    if context.args.compile:
        candidates["ours bf16 compiled"] = inference(fast_copy(pair, torch.bfloat16, compile=True), pixel_values)
        compile_seconds = first_call_seconds(candidates["ours bf16 compiled"])
    expected = candidates["ours"]().masks_queries_logits
    differences = {
        name: relative_difference(candidates[name], expected) for name in candidates if name.startswith("ours ")
    }
    times = context.time(candidates, "fast inference")

    def row(name: str, case: str, notes: str, baseline: str = "reference") -> Result:
        ratio = paired_ratios(times[name], times[baseline])
        return Result("fast", case, Stats.of(times[name]), Stats.of(times[baseline]), ratio, notes=notes)

    difference = differences["ours bf16"]
    bf16_note = f"enable_fast_inference(torch.bfloat16); max difference to fp32 {difference:.1e} of the logit scale"
    results = [
        row("ours", "ours fp32 vs transformers fp32", "no option"),
        row("ours bf16", "ours bf16 vs transformers fp32", bf16_note),
        row(
            "ours bf16",
            "ours bf16 vs transformers bf16 (autocast)",
            "the same precision on both sides",
            baseline="reference bf16",
        ),
    ]
    if context.args.compile:
        note = (
            f"enable_fast_inference(torch.bfloat16, compile=True), compiled in {compile_seconds:.0f} s; max difference "
            f"to fp32 {differences['ours bf16 compiled']:.1e}"
        )
        results.append(row("ours bf16 compiled", "ours bf16 + torch.compile vs transformers fp32", note))
    return results


@register_section(
    "gpu-fps",
    "frames per second on CUDA, 640x640, batch 1, bf16, torch.compile (published, H100: S 330, B 261, L 128)",
    cuda_only=True,
)
def gpu_fps_section(context: BenchmarkContext) -> list[Result]:
    results = []
    for size in context.args.gpu_sizes.split(","):
        pair = context.inference_pair(image_size=640, num_queries=200, size=size.strip())
        pixel_values = context.images(1, image_size=640)
        ours = inference(pair.ours.enable_fast_inference(torch.bfloat16, compile=True), pixel_values)
        reference = torch.compile(pair.reference, options={"freezing": True})
        reference = autocast_inference(reference, pixel_values, torch.bfloat16)
        seconds = {name: first_call_seconds(run) for name, run in (("ours", ours), ("reference", reference))}
        times = context.time({"ours": ours, "reference": reference}, f"ViT-{size} FPS")
        fps = {name: Stats.of([1 / elapsed for elapsed in samples]) for name, samples in times.items()}
        results.append(
            Result(
                "gpu-fps",
                f"ViT-{size}/16, 640px, 200 queries",
                fps["ours"],
                fps["reference"],
                paired_ratios(times["ours"], times["reference"]),
                unit="FPS",
                notes=f"ratio of times; compiled in {seconds['ours']:.0f} s / {seconds['reference']:.0f} s",
            )
        )
    return results


@register_section(
    "profile", "where the forward time goes: torch.profiler self time per operator (mask-free, batch 1)", in_all=False
)
def profile_section(context: BenchmarkContext) -> list[Result]:
    pair = context.inference_pair()
    pixel_values = context.images(1)
    seconds: dict[str, dict[str, float]] = {}
    for name, model in (("ours", pair.ours), ("reference", pair.reference)):
        run = inference(model, pixel_values)
        run()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(context.repeats):
                run()
        seconds[name] = {
            event.key: event.self_cpu_time_total / 1e6 / context.repeats for event in profiler.key_averages()
        }
    operators = sorted(set(seconds["ours"]) | set(seconds["reference"]), key=lambda key: -seconds["ours"].get(key, 0.0))
    results = []
    for operator in operators[: context.args.profile_rows]:
        ours, reference = seconds["ours"].get(operator, 0.0), seconds["reference"].get(operator, 0.0)
        results.append(
            Result(
                "profile",
                operator,
                Stats.of([ours]),
                Stats.of([reference]),
                Stats.of([ours / reference]) if reference else None,
                notes="mean self time per forward",
            )
        )
    totals = [sum(seconds[name].values()) for name in ("ours", "reference")]
    results.append(
        Result(
            "profile",
            "total",
            Stats.of([totals[0]]),
            Stats.of([totals[1]]),
            Stats.of([totals[0] / totals[1]]),
            notes="profiled one model after the other (not interleaved)",
        )
    )
    return results


register_section("learning", "learning on unseen data: eomt train vs a hand loop (benchmarks.learning)", in_all=False)(
    learning_section
)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def format_value(stats: Stats | None, unit: str) -> str:
    if stats is None:
        return "-"
    scale, suffix = {
        "s": (1e3, " ms"),
        "bytes": (2**-20, " MiB"),
        "FLOP/s": (1e-9, " GFLOP/s"),
        "FPS": (1.0, " FPS"),
    }.get(unit, (1.0, ""))
    digits = 0 if unit in ("s", "bytes", "FLOP/s", "FPS") and stats.median * scale >= 100 else 2
    value = lambda x: f"{x * scale:.{digits}f}"  # noqa: E731
    return f"{value(stats.median)}{suffix} [{value(stats.q1)}, {value(stats.q3)}]"


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| section | case | ours | transformers | ours / transformers | notes |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        ratio = format_value(result.ratio, "ratio")
        lines.append(
            f"| {result.section} | {result.case} | {format_value(result.ours, result.unit)} | "
            f"{format_value(result.reference, result.unit)} | {ratio} | {result.notes} |"
        )
    return "\n".join(lines)


def machine_description(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    description = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            description["cpu"] = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def select_sections(names: str, device: torch.device) -> list[Section]:
    if names == "all":
        return [
            section
            for section in SECTIONS.values()
            if section.in_all and (device.type == "cuda" or not section.cuda_only)
        ]
    selected = []
    for name in (name.strip() for name in names.split(",") if name.strip()):
        if name not in SECTIONS:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        if SECTIONS[name].cuda_only and device.type != "cuda":
            raise ValueError(f"section {name!r} needs --device cuda")
        selected.append(SECTIONS[name])
    return selected


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but torch.cuda.is_available() is False")
    return torch.device(name)


def check_arguments(args: argparse.Namespace) -> tuple[torch.device, list[Section]]:
    """The device and the sections to run; `ValueError` naming the option when the options do not fit together."""
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu measures CPU time; use the wall clock with --device cuda")
    for name in (
        "repeats",
        "threads",
        "image_size",
        "queries",
        "train_image_size",
        "train_batch_size",
        "train_queries",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("image_size", "train_image_size"):
        if getattr(args, name) % 16:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a multiple of the patch size 16, got {getattr(args, name)}"
            )
    return device, select_sections(args.sections, device)


def run_benchmark(args: argparse.Namespace, config_overrides: dict[str, Any] | None = None) -> list[Result]:
    """Run the selected sections, print the Markdown table and write the JSON report when `args.out` is set.
    `config_overrides` change the model configuration of every section (tests use tiny models)."""
    if args.memory_probe:
        memory_probe(args)
        return []
    device, sections = check_arguments(args)
    torch.set_num_threads(args.threads)
    context = BenchmarkContext(args, device, config_overrides or {})
    results: list[Result] = []
    started = time.perf_counter()
    for section in sections:
        print(f"== {section.key}: {section.title}", file=sys.stderr, flush=True)
        results.extend(section.run(context))
    machine = machine_description(args, device)
    clock = "process CPU time / threads" if args.clock == "cpu" else "wall clock"
    print(f"\n{machine['cpu']}, {args.threads} threads, torch {machine['torch']}, {clock}, {machine['date']}\n")
    print(markdown_table(results))
    if args.out is not None:
        arguments = {key: str(value) for key, value in vars(args).items() if not callable(value)}
        report = {
            "machine": machine,
            "arguments": arguments,
            "seconds": time.perf_counter() - started,
            "results": [result.to_dict() for result in results],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.out}")
    return results


def run_command(args: argparse.Namespace) -> int:
    """`run_benchmark` for the command line: a bad option is a one-line error and exit status 2."""
    try:
        check_arguments(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_benchmark(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.benchmark", description=__doc__.split("\n\n")[0])
    add_benchmark_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
