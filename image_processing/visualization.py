"""Drawing segmentations over their images, with outlines and a legend, as PNG."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def color_palette(count: int) -> list[tuple[int, int, int]]:
    """`count` distinct, saturated RGB colours (golden-ratio hue steps, alternating brightness)."""
    colors = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        value = 0.95 if index % 2 == 0 else 0.75
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, value)
        colors.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colors


def _outline(segment_map: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another segment."""
    edges = np.zeros(segment_map.shape, dtype=bool)
    edges[:, :-1] |= segment_map[:, :-1] != segment_map[:, 1:]
    edges[:-1, :] |= segment_map[:-1, :] != segment_map[1:, :]
    return edges


def draw_segmentation(
    image: Image.Image | np.ndarray,
    segment_map: np.ndarray,
    labels: dict[int, str] | None = None,
    path: str | os.PathLike | None = None,
    alpha: float = 0.55,
    ignore_id: int | None = -1,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Overlay `segment_map` `(H, W)` (one id per segment) on `image`, outline the segments and add a legend of
    `labels` (segment id -> text) on the right. Pixels equal to `ignore_id` stay uncoloured. `colors` maps segment ids
    to RGB colours (default: `color_palette`'s colour of the id). Saved as PNG at `path`."""
    image = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image
    image = image.convert("RGB")
    segment_map = np.asarray(segment_map)
    if segment_map.shape != (image.height, image.width):
        raise ValueError(f"segment_map has shape {segment_map.shape}, the image is {image.height}x{image.width}")
    ids = [int(i) for i in np.unique(segment_map) if i != ignore_id]
    palette = color_palette(max(ids, default=0) + 1)
    palette = {segment_id: (colors or {}).get(segment_id, palette[segment_id]) for segment_id in ids}
    pixels = np.asarray(image, dtype=np.float32)
    colored = pixels.copy()
    for segment_id in ids:
        colored[segment_map == segment_id] = palette[segment_id]
    keep = (segment_map == ignore_id)[..., None] if ignore_id is not None else np.zeros((*segment_map.shape, 1), bool)
    blended = np.where(keep, pixels, (1 - alpha) * pixels + alpha * colored)
    blended[_outline(segment_map)] = (255, 255, 255)
    overlay = Image.fromarray(blended.clip(0, 255).astype(np.uint8))

    font = ImageFont.load_default()
    row = 14
    entries = [(segment_id, (labels or {}).get(segment_id, str(segment_id))) for segment_id in ids]
    legend_width = 16 + max((int(ImageDraw.Draw(overlay).textlength(text, font=font)) for _, text in entries), default=0) + 8
    canvas = Image.new("RGB", (overlay.width + legend_width, max(overlay.height, row * len(entries) + 8)), (255, 255, 255))
    canvas.paste(overlay, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for index, (segment_id, text) in enumerate(entries):
        top = 4 + index * row
        draw.rectangle([overlay.width + 4, top, overlay.width + 14, top + 10], fill=palette[segment_id], outline=(0, 0, 0))
        draw.text((overlay.width + 18, top - 1), text, fill=(0, 0, 0), font=font)
    if path is not None:
        canvas.save(path, format="PNG")
    return canvas


def _result_segments(result, id2label: dict[int, str] | None) -> tuple[np.ndarray, dict[int, tuple[str, float | None]]]:
    """`(segment map, segment id -> (class name, score or None))` of a post-processing or pipeline result."""
    names = {int(key): value for key, value in (id2label or {}).items()}
    if isinstance(result, dict) and "segmentation" in result:  # panoptic / instance post-processing
        segment_map = np.asarray(result["segmentation"].cpu() if hasattr(result["segmentation"], "cpu") else result["segmentation"])
        segments = {
            int(segment["id"]): (names.get(int(segment["label_id"]), str(segment["label_id"])), segment["score"])
            for segment in result.get("segments_info", [])
        }
        return segment_map.astype(np.int64), segments
    if isinstance(result, (list, tuple)):  # pipeline output: [{"score", "label", "mask"}]
        if not result:
            raise ValueError("draw_result needs a non-empty pipeline result (no segment was found)")
        first = np.asarray(result[0]["mask"])
        segment_map = np.full(first.shape, -1, dtype=np.int64)
        segments = {}
        for index, segment in enumerate(result):
            segment_map[np.asarray(segment["mask"]) > 0] = index
            segments[index] = (segment["label"], segment.get("score"))
        return segment_map, segments
    semantic = np.asarray(result.cpu() if hasattr(result, "cpu") else result).astype(np.int64)  # semantic class map
    if semantic.ndim != 2:
        raise ValueError(f"expected a panoptic/instance result dict, a pipeline result list or a semantic map (H, W), got shape {semantic.shape}")
    return semantic, {int(c): (names.get(int(c), str(int(c))), None) for c in np.unique(semantic) if c >= 0}


def draw_result(
    image: Image.Image | np.ndarray,
    result,
    id2label: dict[int, str] | None = None,
    path: str | os.PathLike | None = None,
    alpha: float = 0.55,
    class_colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Draw a segmentation result over `image` (see `draw_segmentation`) with legend entries "label score".

    `result` is one item of `post_process_panoptic_segmentation` / `post_process_instance_segmentation` (a dict with
    `segmentation` and `segments_info`), of `post_process_semantic_segmentation` (an `(H, W)` class map), or the list
    returned by `pipeline("image-segmentation")` for one image. `id2label` names the classes (e.g.
    `model.config.id2label`). `class_colors` (class name -> RGB) colours segments by class; the outlines then tell the
    instances of a class apart."""
    segment_map, segments = _result_segments(result, id2label)
    legend = {sid: name if score is None else f"{name} {score:.2f}" for sid, (name, score) in segments.items()}
    colors = {sid: class_colors[name] for sid, (name, _) in segments.items() if name in (class_colors or {})}
    return draw_segmentation(image, segment_map, legend, path=path, alpha=alpha, ignore_id=-1, colors=colors)
