"""`eomt demo` and `eomt demo --ablation`: generate the data, train, evaluate, measure and write the outputs."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import pipeline

from ..annealing import unwrap_model
from ..curves import plot_training_curves
from ..data import load_coco_panoptic, make_eval_dataset
from ..metrics import PanopticQuality
from .outputs import ablation_report, comparison_row, demo_report, tile
from .recipe import ABLATION, ANNEALED, MASKED, DemoRecipe, Variant, demo_trainer, write_demo_data

THREADS = 2  # torch intra-op threads: the demo is sized for 2 CPU cores
PANOPTIC_POSTPROCESS = {"threshold": 0.8, "overlap_mask_area_threshold": 0.8}
OVERLAY_ROWS = 4


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


@contextmanager
def attention_mode(model: nn.Module, masked: bool) -> Iterator[None]:
    """Every masked block at probability 1 (`masked`) or 0 (mask-free) inside the block; restored afterwards."""
    probs = unwrap_model(model).attn_mask_probs
    saved = probs.detach().clone()
    with torch.no_grad():
        probs.fill_(1.0 if masked else 0.0)
    try:
        yield
    finally:
        with torch.no_grad():
            probs.copy_(saved)


def evaluate_pq(trainer, masked: bool) -> dict[str, float]:
    """PQ / SQ / RQ (percent, all, things, stuff) of the trainer's model on its evaluation set."""
    model, processor, dataset = trainer.model.eval(), trainer.processing_class, trainer.eval_dataset
    info = dataset.info
    metric = PanopticQuality(info.num_labels, info.thing_ids, info.id2label)
    with attention_mode(model, masked), torch.inference_mode():
        for start in range(0, len(dataset), 16):
            examples = [dataset[index] for index in range(start, min(len(dataset), start + 16))]
            inputs = processor([example["image"] for example in examples])
            outputs = model(pixel_values=inputs["pixel_values"])
            results = processor.post_process_panoptic_segmentation(
                outputs, target_sizes=[example["image"].shape[:2] for example in examples], **PANOPTIC_POSTPROCESS
            )
            for result, example in zip(results, examples):
                metric.update(result["segmentation"], result["segments_info"], example["segmentation"], example["segments_info"])
    return metric.compute()


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
                with attention_mode(model, masked):
                    start = time.perf_counter()
                    model(pixel_values=image)
                    elapsed = time.perf_counter() - start
                if round_index > 0:  # the first round warms up
                    timings[name].append(elapsed * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def sample_pixel_values(trainer, count: int = 8) -> torch.Tensor:
    dataset = trainer.eval_dataset
    images = [dataset[index]["image"] for index in range(min(count, len(dataset)))]
    return trainer.processing_class(images)["pixel_values"]


def _json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, default=float) + "\n")


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
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    clock = Stopwatch()
    with clock("data generation"):
        data_dir = write_demo_data(output_dir / "data", recipe, seed)
    trainer = demo_trainer(recipe, data_dir, output_dir, seed, ANNEALED, progress)
    with clock("training"):
        trainer.train()
    with clock("evaluation"):
        quality = {"mask-free": evaluate_pq(trainer, masked=False), "masked": evaluate_pq(trainer, masked=True)}
    model = trainer.model
    with clock("latency"):
        latency = forward_latency({"mask-free": (model, False), "masked": (model, True)}, sample_pixel_values(trainer))
    with clock("outputs"):
        model_dir = output_dir / "model"
        model.save_pretrained(model_dir)
        trainer.processing_class.save_pretrained(model_dir)
        overlay_grid(model_dir, trainer.eval_dataset, output_dir / "overlays.png")
        plot_training_curves(trainer.state.log_history, output_dir)
    summary = {
        "seed": seed,
        "recipe": recipe.summary(),
        "pq": {mode: result for mode, result in quality.items()},
        "forward_ms_per_image": latency,
        "timings": {**clock.phases, "total": clock.total()},
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
    }
    _json(output_dir / "metrics.json", summary)
    (output_dir / "report.md").write_text(demo_report(summary))
    return summary


def overlay_grid(model_dir: Path, eval_dataset, path: Path, rows: int = OVERLAY_ROWS, scale: int = 2) -> Path:
    """Image / ground truth / prediction of the first `rows` validation images, the predictions made by
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
    grid = tile(cells, ["image", "ground truth", "prediction (mask-free)"])
    grid.save(path, format="PNG")
    return path


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


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
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    clock = Stopwatch()
    with clock("data generation"):
        data_dir = write_demo_data(output_dir / "data", recipe, seed)
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, tuple[nn.Module, bool]] = {}
    for variant in ABLATION:
        trainer = demo_trainer(recipe, data_dir, output_dir, seed, variant, progress)
        with clock(f"training: {variant.name}"):
            trainer.train()
        with clock(f"evaluation: {variant.name}"):
            results[variant.name] = {"pq": evaluate_pq(trainer, variant.masked_inference)}
            if variant is MASKED:  # what dropping the masks at inference costs a model trained with them
                results[variant.name]["pq_mask_free_inference"] = evaluate_pq(trainer, masked=False)
        models[variant.name] = (trainer.model, variant.masked_inference)
    with clock("latency"):
        latency = forward_latency(models, sample_pixel_values(trainer))
    for name, value in latency.items():
        results[name]["forward_ms_per_image"] = value
    summary = {
        "seed": seed,
        "recipe": recipe.summary(),
        "variants": {variant.name: {"title": variant.title, **results[variant.name]} for variant in ABLATION},
        "timings": {**clock.phases, "total": clock.total()},
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
    }
    _json(output_dir / "ablation.json", summary)
    (output_dir / "ablation.md").write_text(ablation_report(summary))
    return summary
