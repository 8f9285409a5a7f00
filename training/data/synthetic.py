"""Synthetic panoptic scenes: textured "stuff" regions and overlapping "thing" instances, with noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

STUFF_CLASSES = ("sky", "grass")
THING_CLASSES = ("disc", "box", "triangle")
CLASS_NAMES = STUFF_CLASSES + THING_CLASSES
_STUFF_COLORS = ((110, 160, 220), (70, 150, 60))
_THING_COLORS = ((220, 60, 50), (240, 200, 40), (150, 70, 200))


@dataclass
class SyntheticScene:
    """An image with its panoptic ground truth: `segment_map` `(H, W)` holds segment ids (0 = void), and
    `segments` lists `{"id", "category_id", "isthing"}` with category ids indexing `CLASS_NAMES`."""

    image: Image.Image
    segment_map: np.ndarray
    segments: list[dict]

    @property
    def semantic_map(self) -> np.ndarray:
        """Class index per pixel, -1 for void."""
        lookup = np.full(self.segment_map.max() + 1, -1, dtype=np.int64)
        for segment in self.segments:
            lookup[segment["id"]] = segment["category_id"]
        return lookup[self.segment_map]


def synthetic_scene(seed: int, size: int = 128, max_things: int = 3, noise: float = 8.0) -> SyntheticScene:
    """A deterministic scene for `seed`: a sky/grass split at a random height and 1..`max_things` shapes."""
    rng = np.random.default_rng(seed)
    segment_map = np.zeros((size, size), dtype=np.int32)
    horizon = int(size * rng.uniform(0.35, 0.65))
    segment_map[:horizon] = 1
    segment_map[horizon:] = 2
    segments = [
        {"id": 1, "category_id": 0, "isthing": False},
        {"id": 2, "category_id": 1, "isthing": False},
    ]
    pixels = np.zeros((size, size, 3), dtype=np.float32)
    pixels[:horizon] = _STUFF_COLORS[0]
    pixels[horizon:] = _STUFF_COLORS[1]
    stripes = 12 * np.sin(np.arange(size) * 0.8)[None, :, None]  # grass texture
    pixels[horizon:] += stripes

    for index in range(int(rng.integers(1, max_things + 1))):
        kind = int(rng.integers(len(THING_CLASSES)))
        radius = rng.uniform(0.1, 0.2) * size
        cy, cx = rng.uniform(radius, size - radius, size=2)
        shape = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(shape)
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        if kind == 0:
            draw.ellipse(box, fill=255)
        elif kind == 1:
            draw.rectangle(box, fill=255)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=255)
        inside = np.asarray(shape) > 127
        segment_id = 3 + index
        segment_map[inside] = segment_id  # later shapes occlude earlier ones
        pixels[inside] = _THING_COLORS[kind]
        segments.append({"id": segment_id, "category_id": len(STUFF_CLASSES) + kind, "isthing": True})

    present = set(np.unique(segment_map).tolist())
    segments = [segment for segment in segments if segment["id"] in present]
    pixels += rng.normal(0, noise, size=pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return SyntheticScene(image=image, segment_map=segment_map, segments=segments)
