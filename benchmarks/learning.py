"""Learning on data nobody tuned for: `eomt train` with its defaults against transformers' EoMT trained by a minimal
hand loop, on generated panoptic sets unlike the demo's (`training.data.synthetic_sets`).

    python -m benchmarks.learning                            # the CPU preset: sets A, B, C, a small model
    python -m benchmarks.learning --preset issue --device cuda  # the issue's scale (1500 images, 1200 steps, ViT 192x6)
    eomt benchmark --sections learning --learning-preset ci  # seconds (what CI runs)

For every set the data is generated once and two models of the same shape are trained from scratch, one after the
other, for the same number of steps at the same batch size (the hand loop in a fresh process: it inherits nothing of
`eomt train`'s run, such as the allocator settings of `training.allocator`):

- `eomt train`: `training.run.train(TrainSettings(...))` (what `eomt train --model ... --eval-split val` runs) with
  its defaults: the recipe it chooses for a random initialisation and for the data (printed), its augmentation, loss
  and trainer, and the post-processing (class-score and mask-overlap thresholds) it chooses on the `val` split and
  saves with the model;
- the hand loop: transformers' `EomtForUniversalSegmentation` with the loss of its own `forward`, AdamW (lr 3e-4,
  weight decay 0.05), a 100-step linear warm-up then polynomial decay (power 0.9), the paper's per-block mask
  annealing, no augmentation, gradient clipping at 1.0, images and masks held in memory (the issue's 40 lines).

Both are evaluated mask-free on a `test` split that neither saw (generated like the others), with this package's
image processor, post-processing and PQ (the transformers model's outputs go through the same post-processing): `PQ`
at each model's own post-processing (what `eomt train` saved; transformers' defaults, thresholds 0.8 / 0.8, for the
hand loop) and at the class-score thresholds 0.3 to 0.8, from one forward pass per image. A third row, `hand loop,
calibrated`, scores the hand loop's model with the post-processing that `eomt train`'s procedure
(`training.evaluation.choose_postprocessing` on the `val` split) picks for it: what the recipe gains beyond that
choice. Train time is the wall-clock time of the training steps (`Trainer`'s `train_runtime`; the hand loop's loop),
evaluation excluded; train CPU time that of the whole training call (this process and its data-loading workers: the
steadier measure on a shared CPU), for `eomt train` its evaluation on `val` included. Writes `learning.md` (the
table), `learning.json` and `learning.png` (PQ against the threshold, one panel per set) to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
RUNS = ("eomt train", "hand loop")
CALIBRATED = "hand loop, calibrated"  # reported with the hand loop: its model, post-processing chosen on val


@dataclass(frozen=True)
class LearningOptions:
    """The scale of the benchmark (see `PRESETS`); `val_images` are `eomt train`'s evaluation split, `test_images`
    the images both runs are scored on; `image_size` None keeps every set's own size, `max_image_size` caps it;
    `num_points` None lets `eomt train` choose; `hand_num_points` is the hand loop's (transformers' default 12544)."""

    sets: tuple[str, ...] = ("A", "B", "C")
    train_images: int = 1500
    val_images: int = 100
    test_images: int = 100
    steps: int = 1200
    batch_size: int = 8
    hidden_size: int = 192
    layers: int = 6
    heads: int = 3
    patch_size: int = 8
    queries: int = 24
    blocks: int = 2
    image_size: int | None = None
    max_image_size: int | None = None
    num_points: int | None = None
    hand_num_points: int = 12544
    hand_lr: float = 3e-4
    hand_warmup: int = 100
    workers: int = 2
    seed: int = 0

    def set_size(self, native: int) -> int:
        size = self.image_size or native
        return min(size, self.max_image_size) if self.max_image_size else size


PRESETS = {
    "issue": LearningOptions(),
    # 2 CPU cores: 5-8 CPU minutes per set and run (set C is rendered at 128 px).
    "cpu": LearningOptions(train_images=600, val_images=60, test_images=60, steps=500, hidden_size=96,
                           max_image_size=128),
    "ci": LearningOptions(train_images=8, val_images=3, test_images=3, steps=2, batch_size=2, hidden_size=32, layers=2,
                          heads=2, queries=6, blocks=1, image_size=32, num_points=64, hand_num_points=64, hand_warmup=1,
                          workers=0),  # fmt: skip
}


# ----------------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------------


def add_learning_arguments(parser: argparse.ArgumentParser, prefix: str = "learning-") -> argparse.ArgumentParser:
    """The options of the learning benchmark (`--learning-*` in `eomt benchmark`, unprefixed alone); each overrides
    the preset's value."""
    group = parser.add_argument_group("learning benchmark")
    group.add_argument(f"--{prefix}preset", dest="learning_preset", choices=sorted(PRESETS), default="cpu",
                       help="scale: issue (the issue's), cpu (default) or ci (seconds)")  # fmt: skip
    group.add_argument(f"--{prefix}sets", dest="learning_sets", help="comma-separated sets of "
                       "training.data.synthetic_sets.SCENE_SETS (default A,B,C)")  # fmt: skip
    for field in dataclasses.fields(LearningOptions):
        if field.name in ("sets",):
            continue
        kind = float if field.name == "hand_lr" else int
        group.add_argument(f"--{prefix}{field.name.replace('_', '-')}", dest=f"learning_{field.name}", type=kind,
                           help=f"(preset's {field.name})")  # fmt: skip
    group.add_argument(f"--{prefix}out", dest="learning_out", type=Path, default=Path("outputs/learning"),
                       help="folder of the reports and the data (default outputs/learning)")  # fmt: skip
    return parser


def learning_options(args: argparse.Namespace) -> LearningOptions:
    """The preset of `args`, with the options given on the command line."""
    options = PRESETS[getattr(args, "learning_preset", None) or "cpu"]
    changes = {
        field.name: getattr(args, f"learning_{field.name}")
        for field in dataclasses.fields(LearningOptions)
        if getattr(args, f"learning_{field.name}", None) is not None and field.name != "sets"
    }
    if getattr(args, "learning_sets", None):
        changes["sets"] = tuple(name.strip() for name in args.learning_sets.split(",") if name.strip())
    return dataclasses.replace(options, **changes)


# ----------------------------------------------------------------------------------------------------------------------
# Data and models
# ----------------------------------------------------------------------------------------------------------------------


def write_set(root: Path, name: str, options: LearningOptions) -> tuple[Path, int]:
    """Generate set `name` under `root` (reused when complete); returns its folder and image size."""
    from training.data.synthetic_sets import SCENE_SETS, write_scene_set

    if name not in SCENE_SETS:
        raise ValueError(f"unknown set {name!r}; choose from {', '.join(SCENE_SETS)}")
    size = options.set_size(SCENE_SETS[name].image_size)
    counts = (options.train_images, options.val_images, options.test_images)
    folder = root / f"set_{name}_{size}px_{'_'.join(map(str, counts))}_seed{options.seed}"
    if not (folder / "annotations" / "panoptic_test2017.json").is_file():
        write_scene_set(folder, name, *counts[:2], seed=options.seed, image_size=size, num_test=counts[2])
    return folder, size


def model_config_fields(options: LearningOptions) -> dict[str, Any]:
    """The `EoMTConfig` fields both models share (besides the classes and the image size)."""
    return dict(hidden_size=options.hidden_size, num_hidden_layers=options.layers, num_attention_heads=options.heads,
                patch_size=options.patch_size)  # fmt: skip


def train_eomt(data: Path, out: Path, size: int, options: LearningOptions, device: str, **overrides: Any) -> dict[str, Any]:
    """`eomt train` with its defaults, evaluated on the `val` split (`overrides`: `TrainSettings` fields, for
    ablations). Returns the trained model, the seconds of training, the recipe and the saved post-processing."""
    from modeling_eomt import EoMTForUniversalSegmentation
    from training.run import train
    from training.settings import TrainSettings

    settings = dict(
        data=str(data), output_dir=str(out), size="S", model_config=model_config_fields(options),
        num_queries=options.queries, num_blocks=options.blocks, image_size=size, max_steps=options.steps,
        batch_size=options.batch_size, eval_split="val", num_points=options.num_points, workers=options.workers,
        seed=options.seed, save_steps=10**9, logging_steps=max(1, options.steps // 20), use_cpu=device == "cpu",
        progress=False,
    )  # fmt: skip
    train(TrainSettings(**{**settings, **overrides}))
    history = json.loads((out / "log_history.json").read_text())
    recipe = json.loads((out / "recipe.json").read_text())
    model = EoMTForUniversalSegmentation.from_pretrained(out)
    seconds = next(record["train_runtime"] for record in history if "train_runtime" in record)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    postprocessing = {key: processor[key] for key in ("threshold", "overlap_mask_area_threshold")}
    return {"model": model, "train_seconds": seconds, "recipe": recipe, "postprocessing": postprocessing}


def train_hand_loop(data: Path, size: int, options: LearningOptions, device: str) -> dict[str, Any]:
    """transformers' EoMT trained by the minimal loop of the module docstring. Returns the model and the seconds."""
    import torch
    from transformers import EomtConfig, EomtForUniversalSegmentation

    from image_processing.transforms import normalize_image
    from modeling_eomt import EoMTConfig
    from modeling_eomt.checkpoints import config_to_transformers_eomt
    from training.annealing import MaskAnnealingSchedule
    from training.data import load_coco_panoptic

    source = load_coco_panoptic(data, "train")
    info = source.info
    images, masks, labels = [], [], []
    for index in range(len(source)):
        sample = source[index]
        target = sample.target.select(~sample.target.is_crowd)
        if len(target):
            images.append(normalize_image(sample.image))
            masks.append(torch.from_numpy(target.masks).float())
            labels.append(torch.from_numpy(target.labels).long())
    config = EoMTConfig.from_size(
        "S", **model_config_fields(options), image_size=size, num_queries=options.queries, num_blocks=options.blocks,
        id2label=dict(info.id2label), label2id=info.label2id,
    )  # fmt: skip
    reference = EomtConfig.from_dict({**config_to_transformers_eomt(config), "train_num_points": options.hand_num_points})
    torch.manual_seed(options.seed)
    model = EomtForUniversalSegmentation(reference).to(device).train()

    steps, warmup = options.steps, min(options.hand_warmup, options.steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.hand_lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / warmup if step < warmup else (1 - (step - warmup) / max(1, steps - warmup)) ** 0.9
    )
    annealing = MaskAnnealingSchedule.from_total_steps(steps, options.blocks)
    generator = torch.Generator().manual_seed(options.seed)
    order = torch.randperm(len(images), generator=generator)
    started = time.perf_counter()
    for step in range(steps):
        if len(order) < options.batch_size:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        batch, order = order[: options.batch_size].tolist(), order[options.batch_size :]
        with torch.no_grad():
            model.attn_mask_probs.copy_(torch.tensor(annealing.probabilities(step)))
        outputs = model(
            pixel_values=torch.stack([images[i] for i in batch]).to(device),
            mask_labels=[masks[i].to(device) for i in batch],
            class_labels=[labels[i].to(device) for i in batch],
        )
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        model.attn_mask_probs.zero_()
    return {"model": model, "train_seconds": seconds}


def train_hand_loop_alone(data: Path, size: int, options: LearningOptions, device: str, folder: Path) -> dict[str, Any]:
    """`train_hand_loop` in a fresh process (`benchmarks.measure.run_in_fresh_process`) with this process's thread
    count, so that it inherits nothing of an `eomt train` run before it in this process (`training.allocator`'s
    settings, warm thread pools); the model comes back through `save_pretrained(folder)`. Returns the model, the
    seconds and the CPU seconds of training."""
    import torch
    from transformers import EomtForUniversalSegmentation

    from benchmarks.measure import run_in_fresh_process

    arguments = dict(data=str(Path(data).resolve()), size=size, options=dataclasses.asdict(options), device=device,
                     threads=torch.get_num_threads(), folder=str(Path(folder).resolve()))  # fmt: skip
    measured = run_in_fresh_process("benchmarks.learning:hand_loop_process", arguments)
    return {"model": EomtForUniversalSegmentation.from_pretrained(folder), **measured}


def hand_loop_process(data: str, size: int, options: dict[str, Any], device: str, threads: int, folder: str) -> dict:
    """Run in a fresh process (`train_hand_loop_alone`): the hand loop, its model saved to `folder`; returns the
    seconds and the CPU seconds of training."""
    import torch

    torch.set_num_threads(threads)
    started = cpu_seconds()
    options = LearningOptions(**{**options, "sets": tuple(options["sets"])})
    trained = train_hand_loop(Path(data), size, options, device)
    measured = {"train_seconds": trained["train_seconds"], "train_cpu_seconds": cpu_seconds() - started}
    trained["model"].save_pretrained(folder)
    return measured


def evaluate_pq(
    model: Any, data: Path, size: int, device: str, postprocessing: dict[str, float] | None = None,
    split: str = "test", overlaps: Sequence[float] = (), thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:  # fmt: skip
    """PQ (all, things, stuff) of `model` (this package's or transformers' EoMT) on `split`, mask-free, with this
    package's processor, post-processing and metric: with `postprocessing` (`threshold` and
    `overlap_mask_area_threshold`; default the authors' 0.8 / 0.8) (`pq`, `pq_things`, `pq_stuff`, and the settings)
    and at every threshold of `thresholds` (`pq@t`, ...), from one forward pass per image; plus the calibration (with
    every mask-overlap threshold of `overlaps` in its `sweep`)."""
    import torch

    from training.data import make_eval_dataset
    from training.evaluation import SegmentationEvaluator, evaluation_dataloader, inference_attention
    from training.run import build_processor

    dataset = make_eval_dataset(data, split)
    evaluator = SegmentationEvaluator(dataset.info, build_processor(dataset.info, size), postprocessing,
                                      sweep_thresholds=thresholds, sweep_overlaps=overlaps)  # fmt: skip
    model = model.to(device).eval()
    with inference_attention(model), torch.no_grad():
        for examples in evaluation_dataloader(dataset, batch_size=16):
            inputs = evaluator.preprocess(examples, with_targets=False)
            outputs = model(pixel_values=inputs["pixel_values"].to(device))
            logits = {"class_queries_logits": outputs.class_queries_logits.float(),
                      "masks_queries_logits": outputs.masks_queries_logits.float()}  # fmt: skip
            evaluator.add(logits, inputs["original_sizes"], examples)
    results = evaluator.compute()
    names = ("pq", "pq_things", "pq_stuff")
    keys = [*names, *(f"{name}@{t:g}" for t in thresholds for name in names)]
    settings = {key: results[key] for key in ("threshold", "overlap_mask_area_threshold")}
    return {**{key: results[key] for key in keys}, "postprocessing": settings, "calibration": results["calibration"]}


def calibrated_postprocessing(model: Any, data: Path, size: int, device: str) -> dict[str, Any]:
    """The post-processing `eomt train` would save for `model`: `choose_postprocessing` on its `val` sweep."""
    from training.evaluation import PANOPTIC_POSTPROCESS, SWEEP_OVERLAPS, choose_postprocessing

    sweep = evaluate_pq(model, data, size, device, split="val", overlaps=SWEEP_OVERLAPS)["calibration"]["sweep"]
    choice = choose_postprocessing(sweep, tuple(PANOPTIC_POSTPROCESS.values()))
    if choice is None:
        return {**PANOPTIC_POSTPROCESS, "reason": None}
    return {"threshold": choice.threshold, "overlap_mask_area_threshold": choice.overlap_mask_area_threshold,
            "reason": choice.reason}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------------


def run_set(name: str, options: LearningOptions, out: Path, device: str = "cpu", runs: Sequence[str] = RUNS,
            **overrides: Any) -> dict[str, Any]:  # fmt: skip
    """Generate set `name`, train `runs` on it and evaluate them; `overrides` go to `eomt train`'s `TrainSettings`."""
    from training.data.synthetic_sets import SCENE_SETS

    data, size = write_set(out / "data", name, options)
    result: dict[str, Any] = {"set": name, "description": SCENE_SETS[name].description, "image_size": size, "runs": {}}
    for run in runs:
        print(f"== set {name}: {run}", file=sys.stderr, flush=True)
        if run == "eomt train":
            started = cpu_seconds()
            tag = "_".join(f"{key}-{value}" for key, value in sorted(overrides.items())) or "defaults"
            run_dir = out / "runs" / f"set_{name}_{tag}_{time.strftime('%Y%m%d-%H%M%S')}"
            trained = train_eomt(data, run_dir, size, options, device, **overrides)
            trained["train_cpu_seconds"] = cpu_seconds() - started
        else:
            trained = train_hand_loop_alone(data, size, options, device, out / "runs" / f"set_{name}_hand_loop")
        model = trained.pop("model")
        result["runs"][run] = {**evaluate_pq(model, data, size, device, trained.pop("postprocessing", None)), **trained}
        if run == "hand loop":
            chosen = calibrated_postprocessing(model, data, size, device)
            reason = chosen.pop("reason")
            metrics = evaluate_pq(model, data, size, device, chosen)
            result["runs"][CALIBRATED] = {**metrics, **trained, "calibration_reason": reason}
    return result


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the data-loading workers)."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))  # fmt: skip


def markdown(results: Sequence[dict[str, Any]], thresholds: Sequence[float] = THRESHOLDS) -> str:
    """One row per set and run: the run's post-processing (class-score / mask-overlap thresholds), PQ, things and
    stuff with it, PQ at every class-score threshold (same overlap), train time."""
    header = ["set", "run", "post-processing", "PQ", "things", "stuff", *(f"PQ@{t:g}" for t in thresholds),
              "things@0.5", "train s", "train CPU s", "time / hand loop (wall, CPU)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        runs = result["runs"]
        hand = runs.get("hand loop", {})
        for run, metrics in runs.items():
            ratios = [metrics.get(key, 0) / hand[key] if hand.get(key) else None
                      for key in ("train_seconds", "train_cpu_seconds")]  # fmt: skip
            ratio = ", ".join("-" if value is None else f"{value:.2f}" for value in ratios)
            ratio = ratio if run == "eomt train" else ""
            settings = metrics["postprocessing"]
            postprocessing = f"{settings['threshold']:g} / {settings['overlap_mask_area_threshold']:g}"
            cells = [f"{result['set']} ({result['image_size']} px)", run, postprocessing,
                     *(_pq(metrics[key]) for key in ("pq", "pq_things", "pq_stuff")),
                     *(_pq(metrics[f"pq@{t:g}"]) for t in thresholds), _pq(metrics.get("pq_things@0.5")),
                     _seconds(metrics.get("train_seconds")), _seconds(metrics.get("train_cpu_seconds")), ratio]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pq(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def plot(results: Sequence[dict[str, Any]], path: Path, thresholds: Sequence[float] = THRESHOLDS) -> None:
    """PQ (solid) and PQ things (dashed) against the class-score threshold, one panel per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for axis, result in zip(axes[0], results):
        for (run, metrics), colour in zip(result["runs"].items(), ("tab:blue", "tab:orange", "tab:green")):
            axis.plot(thresholds, [metrics[f"pq@{t:g}"] for t in thresholds], color=colour, marker="o", label=f"{run} PQ")
            axis.plot(thresholds, [metrics[f"pq_things@{t:g}"] for t in thresholds], color=colour, linestyle="--",
                      label=f"{run} things")  # fmt: skip
        axis.set_title(f"set {result['set']} ({result['image_size']} px)")
        axis.set_xlabel("class-score threshold")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("PQ")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_learning(
    options: LearningOptions, out: Path, device: str = "cpu", threads: int | None = None
) -> list[dict[str, Any]]:
    """Every set of `options`: train, evaluate, print the table and write `learning.md`, `learning.json` and
    `learning.png` to `out`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_set(name, options, out, device) for name in options.sets]
    table = markdown(results)
    print(table)
    (out / "learning.md").write_text(table + "\n")
    report = {"options": dataclasses.asdict(options), "device": device, "threads": torch.get_num_threads(),
              "results": results}  # fmt: skip
    (out / "learning.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(results, out / "learning.png")
    print(f"\nwrote {out / 'learning.md'}, {out / 'learning.json'} and {out / 'learning.png'}", file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0])
    add_learning_arguments(parser, prefix="")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    run_learning(learning_options(args), args.learning_out, args.device, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
