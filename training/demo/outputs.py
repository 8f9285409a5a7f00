"""What the demo writes besides the model: the overlay grid (PNG), the report and the ablation table (Markdown)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from image_processing.visualization import draw_result, draw_segmentation

# ----------------------------------------------------------------------------------------------------------------------
# Overlay grid
# ----------------------------------------------------------------------------------------------------------------------


def upscale_prediction(result: list[dict[str, Any]], size: tuple[int, int]) -> list[dict[str, Any]]:
    """A pipeline result (`[{"score", "label", "mask"}]`) with its masks resized to `size` `(W, H)`, nearest."""
    return [{**segment, "mask": segment["mask"].resize(size, Image.NEAREST)} for segment in result]


def comparison_row(
    image: np.ndarray, segmentation: np.ndarray, segments_info: Sequence[Mapping[str, Any]], prediction: list[dict],
    id2label: Mapping[int, str], scale: int,
) -> list[Image.Image]:
    """`[image, ground truth overlay, prediction overlay]`, each `scale` times the image size.

    `segmentation` `(H, W)` holds the ground-truth segment ids (0: void) and `segments_info` their `label_id`;
    `prediction` is the image-segmentation pipeline's output for the image."""
    height, width = segmentation.shape
    size = (width * scale, height * scale)
    picture = Image.fromarray(image).resize(size, Image.BICUBIC)
    ground_truth = np.kron(segmentation, np.ones((scale, scale), dtype=segmentation.dtype))
    names = {int(segment["id"]): id2label[int(segment["label_id"])] for segment in segments_info}
    if prediction:
        predicted = draw_result(picture, upscale_prediction(prediction, size))
    else:  # no query passed the score threshold
        predicted = draw_segmentation(picture, np.full(ground_truth.shape, -1), {})
    return [picture, draw_segmentation(picture, ground_truth, names, ignore_id=0), predicted]


def tile(rows: Sequence[Sequence[Image.Image]], column_titles: Sequence[str], title: str = "") -> Image.Image:
    """Images in a grid of left-aligned cells (one column width per column), a header row of `column_titles` and an
    optional `title` line above it, on white."""
    font = ImageFont.load_default(size=15)
    gap, header = 10, 26
    widths = [max(row[column].width for row in rows) for column in range(len(column_titles))]
    heights = [max(cell.height for cell in row) for row in rows]
    top = header * (2 if title else 1)
    canvas = Image.new("RGB", (sum(widths) + gap * (len(widths) + 1), top + sum(heights) + gap * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, 4), title, fill=(0, 0, 0), font=font)
    lefts = [gap + sum(widths[:column]) + gap * column for column in range(len(widths))]
    for left, text in zip(lefts, column_titles):
        draw.text((left, top - header + 4), text, fill=(0, 0, 0), font=font)
    y = top
    for row, height in zip(rows, heights):
        for left, cell in zip(lefts, row):
            canvas.paste(cell, (left, y))
        y += height + gap
    return canvas


# ----------------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def pq_row(label: str, quality: Mapping[str, float], latency_ms: float) -> list[str]:
    keys = ("pq", "pq_things", "pq_stuff", "sq", "rq")
    return [label, *(number(quality.get(key)) for key in keys), number(latency_ms, 2)]


PQ_HEADER = ("inference", "PQ", "PQ things", "PQ stuff", "SQ", "RQ", "forward ms / image")


def demo_report(summary: Mapping[str, Any]) -> str:
    """`report.md` of `eomt demo` from the summary `run_demo` returns."""
    recipe, quality, latency = summary["recipe"], summary["pq"], summary["forward_ms_per_image"]
    timings = summary["timings"]
    total = timings["total"]
    lines = [
        "# EoMT demo",
        "",
        f"A small EoMT (ViT {recipe['hidden_size']} wide, {recipe['num_hidden_layers']} blocks, patch "
        f"{recipe['patch_size']}, {recipe['num_queries']} queries, masked attention in the last {recipe['num_blocks']} "
        f"blocks) trained from scratch with mask annealing for {recipe['steps']} steps of {recipe['batch_size']} crops "
        f"on {recipe['num_train']} generated {recipe['image_size']}x{recipe['image_size']} scenes (difficulty "
        f"{recipe['difficulty']}, COCO panoptic layout in `data/`), evaluated on the {recipe['num_val']} validation "
        f"scenes. Seed {summary['seed']}; {duration(total['wall_s'])} in all ({duration(total['cpu_s'])} of CPU time).",
        "",
        markdown_table(PQ_HEADER, [
            pq_row("mask-free (default)", quality["mask-free"], latency["mask-free"]),
            pq_row("masked attention kept", quality["masked"], latency["masked"]),
        ]),  # fmt: skip
        "",
        "Forward latency: median of single-image forward passes on this machine "
        f"({summary['machine']}).",
        "",
        "![validation images, ground truth and mask-free predictions](overlays.png)",
        "",
        "![training loss](loss.png)",
        "",
        "![masked-attention probability per block](annealing.png)",
        "",
        "## Timings",
        "",
        markdown_table(("phase", "wall", "CPU"), [
            [name, duration(phase["wall_s"]), duration(phase["cpu_s"])] for name, phase in timings.items()
        ]),  # fmt: skip
        "",
        "## Recipe",
        "",
        markdown_table(("setting", "value"), [[f"`{key}`", f"`{value}`"] for key, value in recipe.items()]),
        "",
        "The trained model and its image processor are in `model/`: "
        '`pipeline("image-segmentation", model="model")` loads them.',
        "",
    ]
    return "\n".join(lines)


def ablation_table(summary: Mapping[str, Any]) -> str:
    """The ablation's Markdown table: one row per variant, PQ with its own inference mode and forward latency."""
    rows = []
    for letter, (name, result) in zip("abcdefgh", summary["variants"].items()):
        quality = result["pq"]
        rows.append([f"({letter}) {result['title']}", *pq_row("", quality, result["forward_ms_per_image"])[1:]])
    return markdown_table(("variant", *PQ_HEADER[1:]), rows)


def ablation_report(summary: Mapping[str, Any]) -> str:
    """`ablation.md` of `eomt demo --ablation` from the summary `run_ablation` returns."""
    recipe, total = summary["recipe"], summary["timings"]["total"]
    notes = [
        f"- ({letter}) run mask-free: PQ {number(result['pq_mask_free_inference']['pq'])}"
        for letter, result in zip("abcdefgh", summary["variants"].values())
        if "pq_mask_free_inference" in result
    ]
    lines = [
        "# EoMT ablation: masked attention and mask annealing",
        "",
        f"The same generated data ({recipe['num_train']} training / {recipe['num_val']} validation "
        f"{recipe['image_size']}x{recipe['image_size']} scenes, difficulty {recipe['difficulty']}), model shape, "
        f"{recipe['steps']} steps of {recipe['batch_size']} crops and seed ({summary['seed']}) for every variant. "
        f"Forward latency: median of single-image forward passes, the three models in turns ({summary['machine']}). "
        f"{duration(total['wall_s'])} in all ({duration(total['cpu_s'])} of CPU time).",
        "",
        ablation_table(summary),
        "",
        *notes,
        "",
    ]
    return "\n".join(lines)
