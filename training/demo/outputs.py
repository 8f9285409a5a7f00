"""What the demo writes besides the model: the overlay grid (PNG), the report and the ablation table (Markdown)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from image_processing.visualization import color_palette, draw_result, draw_segmentation

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
    """`[image, ground truth overlay, prediction overlay]`, each `scale` times the image size, segments coloured by
    class in both overlays.

    `segmentation` `(H, W)` holds the ground-truth segment ids (0: void) and `segments_info` their `label_id`;
    `prediction` is the image-segmentation pipeline's output for the image."""
    height, width = segmentation.shape
    size = (width * scale, height * scale)
    picture = Image.fromarray(image).resize(size, Image.BICUBIC)
    class_colors = dict(zip(id2label.values(), color_palette(len(id2label))))
    ground_truth = np.kron(segmentation, np.ones((scale, scale), dtype=segmentation.dtype))
    names = {int(segment["id"]): id2label[int(segment["label_id"])] for segment in segments_info}
    colors = {segment_id: class_colors[name] for segment_id, name in names.items()}
    if prediction:
        predicted = draw_result(picture, upscale_prediction(prediction, size), class_colors=class_colors)
    else:  # no query passed the score threshold
        predicted = draw_segmentation(picture, np.full(ground_truth.shape, -1), {})
    return [picture, draw_segmentation(picture, ground_truth, names, ignore_id=0, colors=colors), predicted]


def tile(rows: Sequence[Sequence[Image.Image]], column_titles: Sequence[str], title: str = "") -> Image.Image:
    """Images in a grid of left-aligned cells (one width per column) under a `title` line (if any) and a header row
    of `column_titles`, on white."""
    font = ImageFont.load_default(size=15)
    gap, header = 10, 26
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [
        max(max(row[column].width for row in rows), int(measure.textlength(text, font=font)))
        for column, text in enumerate(column_titles)
    ]
    heights = [max(cell.height for cell in row) for row in rows]
    top = header * (2 if title else 1)
    width = max(sum(widths) + gap * (len(widths) + 1), int(measure.textlength(title, font=font)) + 2 * gap)
    canvas = Image.new("RGB", (width, top + sum(heights) + gap * len(rows)), "white")
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
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


PQ_KEYS = ("pq", "pq_things", "pq_stuff", "sq", "rq")
PQ_COLUMNS = ("PQ", "PQ things", "PQ stuff", "SQ", "RQ", "forward ms / image")


def pq_cells(quality: Mapping[str, float], latency_ms: float) -> list[str]:
    return [*(number(quality.get(key)) for key in PQ_KEYS), number(latency_ms, 2)]


def setup_sentence(summary: Mapping[str, Any]) -> str:
    """The data, model and schedule of a run in one paragraph."""
    recipe, total = summary["recipe"], summary["timings"]["total"]
    side = recipe["image_size"]
    return (
        f"A small EoMT (ViT {recipe['hidden_size']} wide with {recipe['num_hidden_layers']} blocks, patch "
        f"{recipe['patch_size']}, {recipe['num_queries']} queries, masked attention possible in the last "
        f"{recipe['num_blocks']} blocks) trained from scratch for {recipe['steps']} steps of {recipe['batch_size']} "
        f"crops on {recipe['num_train']} generated {side}x{side} scenes (difficulty {recipe['difficulty']}, COCO "
        f"panoptic layout in `data/`) and evaluated on {recipe['num_val']} validation scenes; seed {summary['seed']}. "
        f"{duration(total['wall_s'])} from data generation to the written outputs, {duration(total['cpu_s'])} of CPU "
        f"time ({summary['machine']})."
    )


def demo_report(summary: Mapping[str, Any]) -> str:
    """`report.md` of `eomt demo` from the summary `run_demo` returns."""
    quality, latency = summary["pq"], summary["forward_ms_per_image"]
    results = markdown_table(("inference", *PQ_COLUMNS), [
        ["mask-free (default)", *pq_cells(quality["mask-free"], latency["mask-free"])],
        ["masked attention kept", *pq_cells(quality["masked"], latency["masked"])],
    ])  # fmt: skip
    timings = markdown_table(
        ("phase", "wall", "CPU"),
        [[name, duration(phase["wall_s"]), duration(phase["cpu_s"])] for name, phase in summary["timings"].items()],
    )
    recipe = markdown_table(("setting", "value"), [[f"`{key}`", f"`{value}`"] for key, value in summary["recipe"].items()])
    return f"""# EoMT demo

{setup_sentence(summary)}

Mask annealing lowers the masked-attention probability of each block from 1 to 0 during training, so the model runs
mask-free; the second row keeps masked attention at inference instead.

{results}

Latency: median time of a single-image forward pass on this machine.

![validation images, ground truth and mask-free predictions](overlays.png)

![training loss](loss.png)

![masked-attention probability per block](annealing.png)

The trained model and its image processor are in `model/`: `pipeline("image-segmentation", model=".../model")`
loads them.

## Timings

{timings}

## Recipe

{recipe}
"""


def ablation_table(summary: Mapping[str, Any]) -> str:
    """The ablation's Markdown table: one row per variant, its PQ with its own inference mode and forward latency."""
    rows = [
        [f"({letter}) {result['title']}", *pq_cells(result["pq"], result["forward_ms_per_image"])]
        for letter, result in zip("abc", summary["variants"].values())
    ]
    return markdown_table(("variant", *PQ_COLUMNS), rows)


def ablation_report(summary: Mapping[str, Any]) -> str:
    """`ablation.md` of `eomt demo --ablation` from the summary `run_ablation` returns."""
    masked = summary["variants"]["masked"]
    return f"""# EoMT ablation: masked attention and mask annealing

{setup_sentence(summary)}

Every variant has the same data, model shape, schedule and seed, and all supervise the predictions made before each
masked block (deep supervision); they differ only in whether queries attend through their predicted masks.

{ablation_table(summary)}

Latency: median time of a single-image forward pass, the three models measured in turns on this machine.
Model (a) run mask-free scores PQ {number(masked["pq_mask_free_inference"]["pq"])}: a model trained with masked
attention needs it at inference, unless the masks are annealed away during training as in (b).
"""
