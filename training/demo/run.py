"""`eomt demo` and `eomt demo --ablation`: generate the data, train, evaluate, measure and write the outputs.

Both run torch with one intra-op thread (`THREADS`) and read the training batches in one DataLoader worker process,
so two cores are used without OpenMP threads waiting on each other: the demo's model is small and its kernels short,
and with two intra-op threads on a 2-core machine that also ran other work a training step took 5-7x longer (wall
and CPU time) than with one. The CPU time of a run is then close to its wall time on an idle machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import pipeline

from ..curves import plot_training_curves
from ..data import EvalDataset
from ..evaluation import PANOPTIC_POSTPROCESS, inference_attention
from ..run import write_json
from ..trainer import EoMTTrainer
from .outputs import ablation_report, comparison_row, demo_report, tile
from .recipe import ABLATION, ANNEALED, MASKED, DemoRecipe, demo_trainer, write_demo_data

THREADS = 1  # torch intra-op threads; see the module docstring
OVERLAY_ROWS = 4


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block, restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class Stopwatch:
    """Wall-clock and CPU time (this process and its children, user + system) of named phases."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    @staticmethod
    def cpu_seconds() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), self.cpu_seconds()
        yield
        self.phases[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": self.cpu_seconds() - cpu}

    def total(self) -> dict[str, float]:
        return {key: sum(phase[key] for phase in self.phases.values()) for key in ("wall_s", "cpu_s")}


def evaluate_pq(trainer: EoMTTrainer, masked: bool) -> dict[str, float]:
    """PQ / SQ / RQ (percent; all, things, stuff) of the trainer's model on its evaluation set: `trainer.evaluate()`
    mask-free, or with masked attention in every masked block (`masked`)."""
    trainer.eval_masked_attention = masked
    metrics = trainer.evaluate()
    quality = ("eval_pq", "eval_sq", "eval_rq")
    return {key.removeprefix("eval_"): value for key, value in metrics.items() if key.startswith(quality)}


def forward_latency(
    models: Mapping[str, tuple[nn.Module, bool]], pixel_values: torch.Tensor, repeats: int = 30
) -> dict[str, float]:
    """Median milliseconds of one forward pass on each image of `pixel_values` `(N, 3, S, S)` (batch 1), per named
    `(model, masked)`. The models run in turns, image by image, so a changing machine load affects them alike."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_index in range(repeats + 1):
            for name, (model, masked) in models.items():
                model.eval()
                image = pixel_values[round_index % len(pixel_values)][None]
                with inference_attention(model, masked):
                    start = time.perf_counter()
                    model(pixel_values=image)
                    elapsed = time.perf_counter() - start
                if round_index > 0:  # the first round warms up
                    timings[name].append(elapsed * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def sample_pixel_values(trainer: EoMTTrainer, count: int = 8) -> torch.Tensor:
    """Model inputs `(count, 3, S, S)` of the first validation images."""
    dataset = trainer.eval_dataset
    images = [dataset[index]["image"] for index in range(min(count, len(dataset)))]
    return trainer.processing_class(images)["pixel_values"]


def machine() -> str:
    """The CPU, its core count, torch's version and thread count, in words."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {threads} thread{'s' * (threads > 1)}"


def summary_of(recipe: DemoRecipe, seed: int, clock: Stopwatch, **results: Any) -> dict[str, Any]:
    """What the JSON outputs hold: the settings, `results`, the timings and the machine."""
    return {
        "seed": seed,
        "recipe": recipe.summary(),
        **results,
        "timings": {**clock.phases, "total": clock.total()},
        "machine": machine(),
    }


# ----------------------------------------------------------------------------------------------------------------------
# eomt demo
# ----------------------------------------------------------------------------------------------------------------------


def run_demo(
    output_dir: str | Path = "outputs/demo", recipe: DemoRecipe | None = None, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Generate the data, train with mask annealing, evaluate mask-free and with masked attention, and write
    `data/`, `model/`, `overlays.png`, `loss.png`, `annealing.png`, `report.md` and `metrics.json` to `output_dir`.
    Returns what `metrics.json` holds."""
    recipe = recipe or DemoRecipe()
    output_dir = Path(output_dir)
    clock = Stopwatch()
    with torch_threads(THREADS):
        with clock("data generation"):
            data_dir = write_demo_data(output_dir / "data", recipe, seed)
        with clock("training"):
            trainer = demo_trainer(recipe, data_dir, output_dir, seed, ANNEALED, progress)
            trainer.train()
        history = list(trainer.state.log_history)  # before the evaluations add their records
        with clock("evaluation"):
            quality = {"mask-free": evaluate_pq(trainer, masked=False), "masked": evaluate_pq(trainer, masked=True)}
        model = trainer.model
        with clock("latency"):
            inputs = sample_pixel_values(trainer)
            latency = forward_latency({"mask-free": (model, False), "masked": (model, True)}, inputs)
        with clock("outputs"):
            model_dir = output_dir / "model"
            model.save_pretrained(model_dir)
            trainer.processing_class.save_pretrained(model_dir)
            title = (f"EoMT trained from scratch in {recipe.steps} steps: mask-free PQ {quality['mask-free']['pq']:.1f} on "
                     f"{len(trainer.eval_dataset)} validation scenes (seed {seed}); uncoloured: no segment")  # fmt: skip
            overlay_grid(model_dir, trainer.eval_dataset, output_dir / "overlays.png", title)
            plot_training_curves(history, output_dir)
        summary = summary_of(recipe, seed, clock, pq=quality, forward_ms_per_image=latency)
    write_json(output_dir / "metrics.json", summary)
    (output_dir / "report.md").write_text(demo_report(summary))
    return summary


def overlay_grid(
    model_dir: Path, eval_dataset: EvalDataset, path: Path, title: str, rows: int = OVERLAY_ROWS, scale: int = 2
) -> Path:
    """Image / ground truth / prediction of the first `rows` validation images under `title`, the predictions made by
    `pipeline("image-segmentation")` on the saved model (so the grid also shows that it loads)."""
    segmenter = pipeline("image-segmentation", model=str(model_dir), device="cpu")
    examples = [eval_dataset[index] for index in range(min(rows, len(eval_dataset)))]
    images = [Image.fromarray(example["image"]) for example in examples]
    predictions = segmenter(images, subtask="panoptic", **PANOPTIC_POSTPROCESS)
    id2label = eval_dataset.info.id2label
    cells = [
        comparison_row(example["image"], example["segmentation"], example["segments_info"], prediction, id2label, scale)
        for example, prediction in zip(examples, predictions)
    ]
    tile(cells, ["image", "ground truth", "prediction (mask-free)"], title).save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# eomt demo --ablation
# ----------------------------------------------------------------------------------------------------------------------


def run_ablation(
    output_dir: str | Path = "outputs/demo", recipe: DemoRecipe | None = None, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Train the variants of `ABLATION` on the same generated data with the same recipe and seed, evaluate each with
    its inference mode, measure their forward latency in turns, and write `ablation.md` and `ablation.json` to
    `output_dir` (the data set to `output_dir/data`). Returns what `ablation.json` holds."""
    recipe = recipe or DemoRecipe()
    output_dir = Path(output_dir)
    clock = Stopwatch()
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, tuple[nn.Module, bool]] = {}
    with torch_threads(THREADS):
        with clock("data generation"):
            data_dir = write_demo_data(output_dir / "data", recipe, seed)
        for variant in ABLATION:
            with clock(f"training: {variant.name}"):
                trainer = demo_trainer(recipe, data_dir, output_dir, seed, variant, progress)
                trainer.train()
            with clock(f"evaluation: {variant.name}"):
                results[variant.name] = {"title": variant.title, "pq": evaluate_pq(trainer, variant.masked_inference)}
                if variant is MASKED:  # what dropping the masks at inference costs a model trained with them
                    results[variant.name]["pq_mask_free_inference"] = evaluate_pq(trainer, masked=False)
            models[variant.name] = (trainer.model, variant.masked_inference)
        with clock("latency"):
            latency = forward_latency(models, sample_pixel_values(trainer))
        for name, value in latency.items():
            results[name]["forward_ms_per_image"] = value
        summary = summary_of(recipe, seed, clock, variants=results)
    write_json(output_dir / "ablation.json", summary)
    (output_dir / "ablation.md").write_text(ablation_report(summary))
    return summary
