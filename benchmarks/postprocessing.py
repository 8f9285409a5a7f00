"""Post-processing speed: ours (`image_processing.post_processing`) vs transformers' `EomtImageProcessorPil`.

    python -m benchmarks.postprocessing [--batch-sizes 1 2] [--repeats 7] [--threads 2 [1 ...]] [--json PATH] [--no-realistic]

Both run on the same synthetic model outputs (200 queries, 640x640 inputs so 160x160 mask logits; 133 classes for
panoptic/instance with COCO-like image sizes, 150 classes and two sliding windows per image for semantic). Ours and
transformers' repetitions are interleaved so that background load hits both; the table reports the medians and the
median of the per-repetition ratios ours / transformers, and whether both gave the same maps and segments.
The "realistic" rows run both on busier outputs (`benchmarks.realistic_outputs`: about 40 confident blob-shaped
queries, overlapping, and unsure queries that keep some class probability, 133 classes, no sliding windows), where
the shortcuts for trained-looking outputs help less.

On a machine busy with other work (more runnable threads than cores), OpenMP's default of spinning idle threads
between parallel regions slows both sides down, ours (many short kernels) far more than transformers (a few huge
ones): run with `OMP_WAIT_POLICY=PASSIVE` there, or compare `--threads 1 2`. The setting is recorded in the JSON.
`run_postprocessing_benchmark(...)` returns the same numbers as a dict for the project's benchmark harness.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmarks.realistic_outputs import realistic_cases
from image_processing.post_processing import post_process_instance, post_process_panoptic, post_process_semantic

PANOPTIC_TARGETS = [(480, 640), (427, 640)]  # COCO-like originals, longest side 640: padded at the bottom
SEMANTIC_TARGETS = [(512, 683), (683, 512)]  # ADE20K-like originals: two 640 windows after shortest-side resize


def synthetic_outputs(
    batch_size: int,
    num_queries: int = 200,
    num_classes: int = 133,
    mask_size: tuple[int, int] = (160, 160),
    num_objects: tuple[int, int] = (5, 30),
    class_pool: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs `(B, Q, K + 1)`, `(B, Q, h, w)` that look like a trained EoMT's: per image, 5-30 queries (drawn
    from `num_objects`) confidently predict a class (probability ~0.65-0.99) with a mask covering one cell of a
    random partition of the image (soft edges); the others predict "no object" (~0.99) with smooth, mostly
    negative mask logits. Object classes are drawn from `class_pool` (default: all classes)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = mask_size
    class_logits = torch.randn(batch_size, num_queries, num_classes + 1, generator=generator)
    class_logits[..., -1] += 10.0
    noise = torch.randn(batch_size, num_queries, max(1, height // 8), max(1, width // 8), generator=generator)
    mask_logits = F.interpolate(noise, size=mask_size, mode="bilinear", align_corners=False) * 4.0 - 4.0
    rows, cols = torch.meshgrid(torch.arange(height) / height, torch.arange(width) / width, indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    pool = torch.as_tensor(list(class_pool) if class_pool is not None else range(num_classes))
    for b in range(batch_size):
        count = min(num_queries, int(torch.randint(num_objects[0], num_objects[1] + 1, (1,), generator=generator)))
        queries = torch.randperm(num_queries, generator=generator)[:count]
        classes = pool[torch.randint(0, len(pool), (count,), generator=generator)]
        cells = torch.cdist(grid, torch.rand(count, 2, generator=generator)).argmin(1).view(height, width)
        inside = (cells[None] == torch.arange(count)[:, None, None]).float()
        soft = F.avg_pool2d(inside[None], 5, stride=1, padding=2, count_include_pad=False)[0]
        mask_logits[b, queries] = (soft - 0.5) * 16.0 + 0.5 * torch.randn(count, height, width, generator=generator)
        class_logits[b, queries, -1] = 0.0
        class_logits[b, queries, classes] = 6.0 + 5.0 * torch.rand(count, generator=generator)
    return class_logits, mask_logits


def synthetic_window_outputs(
    resized_sizes: Sequence[tuple[int, int]], window: int, num_queries: int = 200, num_classes: int = 150, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """Outputs of sliding windows over images resized to `resized_sizes` that agree where windows overlap, as a
    trained model's do: `synthetic_outputs` for each whole image, cut into `window`-pixel windows (mask logits are
    1/4 of the pixels). Returns the class logits, mask logits (one row per window) and the window offsets."""
    class_rows, mask_rows, offsets = [], [], []
    for index, size in enumerate(resized_sizes):
        class_logits, mask_logits = synthetic_outputs(
            1, num_queries, num_classes, (size[0] // 4, size[1] // 4), seed=seed + index
        )
        for offset in window_offsets(size, window, index):
            start = offset[1] // 4
            rows = slice(start, start + window // 4) if size[0] > size[1] else slice(0, window // 4)
            cols = slice(0, window // 4) if size[0] > size[1] else slice(start, start + window // 4)
            class_rows.append(class_logits[0])
            mask_rows.append(mask_logits[0, :, rows, cols])
            offsets.append(offset)
    return torch.stack(class_rows), torch.stack(mask_rows), offsets


def window_offsets(resized_size: tuple[int, int], window: int, image_index: int) -> list[tuple[int, int, int]]:
    """Sliding windows `(image_index, start, end)` along the longer side, evenly overlapping (transformers' split)."""
    longer = max(resized_size)
    count = math.ceil(longer / window)
    overlap = (count * window - longer) / (count - 1) if count > 1 else 0
    return [(image_index, int(i * (window - overlap)), int(i * (window - overlap)) + window) for i in range(count)]


def _fits_longest(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """transformers' longest-side resize (truncating), the valid region of a padded input."""
    from transformers.image_transforms import get_size_with_aspect_ratio

    return get_size_with_aspect_ratio(size, longest, longest)


def _shortest(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    from transformers.image_transforms import get_size_with_aspect_ratio

    return get_size_with_aspect_ratio(size, shortest, None)


def _same_results(ours: list, theirs: list) -> bool:
    """Same maps and segments (panoptic/instance dicts or semantic maps)."""
    for mine, reference in zip(ours, theirs):
        if isinstance(mine, dict):
            if mine["segments_info"] != reference["segments_info"]:
                return False
            mine, reference = mine["segmentation"], reference["segmentation"]
        if not torch.equal(mine.long(), reference.long()):
            return False
    return True


def _cases(batch_size: int, num_queries: int, input_size: int, panoptic_classes: int, semantic_classes: int, seed: int):
    """(task, ours, transformers') callables on the same outputs."""
    from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

    square = {"shortest_edge": input_size, "longest_edge": input_size}
    reference = EomtImageProcessorPil(size=square, do_pad=True)

    class_logits, mask_logits = synthetic_outputs(batch_size, num_queries, panoptic_classes, (input_size // 4,) * 2, seed=seed)
    targets = [PANOPTIC_TARGETS[i % len(PANOPTIC_TARGETS)] for i in range(batch_size)]
    valid = [_fits_longest(target, input_size) for target in targets]
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=None)
    geometry = {"input_size": (input_size, input_size), "valid_sizes": valid}
    yield (
        "panoptic",
        partial(post_process_panoptic, class_logits, mask_logits, targets, **geometry),
        partial(reference.post_process_panoptic_segmentation, outputs, targets, size=square),
    )
    yield (
        "instance",
        partial(post_process_instance, class_logits, mask_logits, targets, **geometry),
        partial(reference.post_process_instance_segmentation, outputs, targets, size=square),
    )

    semantic_targets = [SEMANTIC_TARGETS[i % len(SEMANTIC_TARGETS)] for i in range(batch_size)]
    resized = [_shortest(target, input_size) for target in semantic_targets]
    class_logits, mask_logits, offsets = synthetic_window_outputs(resized, input_size, num_queries, semantic_classes, seed + 1)
    outputs = SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=[torch.tensor(o) for o in offsets]
    )
    semantic_size = {"shortest_edge": input_size, "longest_edge": None}
    windows = {"input_size": (input_size, input_size), "patch_offsets": offsets, "resized_sizes": resized}
    yield (
        "semantic",
        partial(post_process_semantic, class_logits, mask_logits, semantic_targets, **windows),
        partial(reference.post_process_semantic_segmentation, outputs, semantic_targets, size=semantic_size),
    )


def _time_pair(ours: Callable[[], Any], theirs: Callable[[], Any], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Interleaved seconds (ours first on even repetitions, theirs first on odd ones): wall-clock ("ours", "theirs")
    and CPU time of the process ("ours_cpu", "theirs_cpu"; all threads, so idle OpenMP threads spinning count)."""
    times: dict[str, list[float]] = {"ours": [], "theirs": [], "ours_cpu": [], "theirs_cpu": []}
    for repetition in range(warmup + repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, function in order if repetition % 2 == 0 else order[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            if repetition >= warmup:
                times[name].append(time.perf_counter() - start)
                times[f"{name}_cpu"].append(time.process_time() - start_cpu)
    return times


def run_postprocessing_benchmark(
    batch_sizes: Sequence[int] = (1, 2),
    num_queries: int = 200,
    input_size: int = 640,
    panoptic_classes: int = 133,
    semantic_classes: int = 150,
    warmup: int = 1,
    repeats: int = 7,
    threads: int | Sequence[int] = 2,
    seed: int = 0,
    progress: bool = True,
    realistic: bool = True,
) -> dict[str, Any]:
    """Time ours vs transformers' post-processing per task, batch size and thread count (CPU), on `synthetic_outputs`
    ("random" rows) and, with `realistic`, on `benchmarks.realistic_outputs` ("realistic" rows: busy scenes, 133
    classes, no windows). Returns `{"settings": {...}, "results": [{"task", "outputs", "batch_size", "threads",
    "ours_ms", "transformers_ms", "ratio", "cpu_ratio", "same_output"}, ...]}` where the times are wall-clock medians,
    `ratio` is the median of the per-repetition ratios ours / transformers and `cpu_ratio` the same in CPU time."""
    thread_counts = [threads] if isinstance(threads, int) else list(threads)
    load_before = os.getloadavg()
    previous_threads = torch.get_num_threads()
    cases = [(b, "random", case) for b in batch_sizes for case in _cases(b, num_queries, input_size, panoptic_classes, semantic_classes, seed)]
    if realistic:
        cases += [(b, "realistic", case) for b in batch_sizes for case in realistic_cases(b, num_queries, input_size, panoptic_classes, seed)]
    runs = [(count, b, kind, case) for count in thread_counts for b, kind, case in cases]
    results = []
    try:
        for count, batch_size, kind, (task, ours, theirs) in tqdm(runs, desc="post-processing", disable=not progress, file=sys.stderr):
            torch.set_num_threads(count)
            same = _same_results(ours(), theirs())
            times = _time_pair(ours, theirs, warmup, repeats)
            ours_times, their_times = times["ours"], times["theirs"]
            results.append(
                {
                    "task": task,
                    "outputs": kind,
                    "batch_size": batch_size,
                    "threads": count,
                    "ours_ms": 1000 * statistics.median(ours_times),
                    "transformers_ms": 1000 * statistics.median(their_times),
                    "ratio": statistics.median(a / b for a, b in zip(ours_times, their_times)),
                    "cpu_ratio": statistics.median(a / b for a, b in zip(times["ours_cpu"], times["theirs_cpu"])),
                    "same_output": same,
                }
            )
    finally:
        torch.set_num_threads(previous_threads)
    settings = {
        "num_queries": num_queries,
        "input_size": input_size,
        "panoptic_classes": panoptic_classes,
        "semantic_classes": semantic_classes,
        "panoptic_targets": PANOPTIC_TARGETS,
        "semantic_targets": SEMANTIC_TARGETS,
        "warmup": warmup,
        "repeats": repeats,
        "threads": thread_counts,
        "torch": torch.__version__,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],  # other work on the machine skews times
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    return {"settings": settings, "results": results}


TARGET_RATIO = 0.1  # the project's goal: at least 10x faster than transformers on every task


def markdown_table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"{settings['num_queries']} queries, {settings['input_size']}x{settings['input_size']} inputs, load average "
        f"{settings['load_average_before_after'][0]:.1f} -> {settings['load_average_before_after'][1]:.1f}, "
        f"OMP_WAIT_POLICY={settings['omp_wait_policy']}; target ours / transformers <= {TARGET_RATIO}",
        "",
        "| task | outputs | batch | threads | ours (ms) | transformers (ms) | ours / transformers | same in CPU time | same output |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['task']} | {row.get('outputs', 'random')} | {row['batch_size']} | {row['threads']} | {row['ours_ms']:.1f} | {row['transformers_ms']:.1f} | "
            f"{row['ratio']:.3f}{'' if row['ratio'] <= TARGET_RATIO else ' (over target)'} | {row.get('cpu_ratio', float('nan')):.3f} | "
            f"{'yes' if row['same_output'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-queries", type=int, default=200)
    parser.add_argument("--input-size", type=int, default=640)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="one run per thread count")
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmarks/postprocessing.json"))
    parser.add_argument("--no-realistic", action="store_true", help="only the rows on random outputs")
    args = parser.parse_args(argv)
    report = run_postprocessing_benchmark(
        args.batch_sizes, args.num_queries, args.input_size, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
        realistic=not args.no_realistic,
    )
    print(markdown_table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"written: {args.json}")
    return report


if __name__ == "__main__":
    main()
