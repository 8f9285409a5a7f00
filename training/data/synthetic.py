"""Synthetic segmentation data: textured "stuff" regions and overlapping "thing" instances, with noise.

`synthetic_scene` draws one scene in memory; the writers save whole data sets in the official layouts the readers
load: COCO panoptic (`write_synthetic_coco_panoptic`), COCO instance (`write_synthetic_coco_instance`) and ADE20K
semantic (`write_synthetic_ade20k`). Scenes depend only on (seed, split, index), so a data set is reproducible.

Classes (contiguous labels follow `CLASS_NAMES`, things first as in COCO):
- things: disc (red), box (yellow), triangle (purple), cross (cyan), each with per-instance colour variation;
- stuff: sky (smooth gradient), grass (vertical streaks), water (horizontal waves), wall (bricks).
`difficulty` in [0, 1] scales pixel noise, colour variation (at 1 the thing colours overlap), the number and the
smallest size of things, and the chance of unlabelled (void) distractor blobs.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from image_processing.targets import id_to_rgb

THING_CLASSES = ("disc", "box", "triangle", "cross")
STUFF_CLASSES = ("sky", "grass", "water", "wall")
CLASS_NAMES = THING_CLASSES + STUFF_CLASSES
# COCO-style category ids with gaps (sorted, so contiguous label i is CLASS_NAMES[i]).
CATEGORY_IDS = (1, 2, 4, 7, 12, 15, 17, 20)

_THING_RGB = ((220, 50, 40), (240, 190, 30), (150, 60, 200), (40, 200, 210))
_SKY, _GRASS, _WATER, _WALL = range(len(THING_CLASSES), len(CLASS_NAMES))
_SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SyntheticScene:
    """An image with its panoptic ground truth.

    `segment_map` `(H, W)` int32 holds segment ids `1..n` (0 = void); `segments` lists `{"id", "category_id",
    "isthing", "iscrowd"}` with `category_id` indexing `CLASS_NAMES`; `polygons` maps each thing's segment id to the
    vertices `[(x, y), ...]` of its whole (un-occluded) shape.
    """

    image: Image.Image
    segment_map: np.ndarray
    segments: list[dict]
    polygons: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def semantic_map(self) -> np.ndarray:
        """Class index per pixel `(H, W)`, -1 for void."""
        lookup = np.full(self.segment_map.max() + 1, -1, dtype=np.int64)
        for segment in self.segments:
            lookup[segment["id"]] = segment["category_id"]
        return lookup[self.segment_map]


def _stuff_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class index per pixel `(H, W)`: sky above a slanted horizon, grass and/or water below, sometimes a wall."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    horizon = size * rng.uniform(0.25, 0.55) + np.tan(rng.uniform(-0.15, 0.15)) * (xs - size / 2)
    layout = np.where(ys < horizon, _SKY, _GRASS)
    ground = rng.integers(3)  # 0: grass, 1: water, 2: both, split by a slanted vertical boundary
    if ground == 1:
        layout[ys >= horizon] = _WATER
    elif ground == 2:
        boundary = size * rng.uniform(0.3, 0.7) + np.tan(rng.uniform(-0.3, 0.3)) * (ys - size / 2)
        left, right = (_GRASS, _WATER) if rng.random() < 0.5 else (_WATER, _GRASS)
        layout[ys >= horizon] = np.where(xs < boundary, left, right)[ys >= horizon]
    if rng.random() < 0.5:
        width, top = size * rng.uniform(0.2, 0.35), size * rng.uniform(0.1, 0.4)
        side = xs < width if rng.random() < 0.5 else xs >= size - width
        layout[side & (ys >= top)] = _WALL
    return layout


def _stuff_pixels(rng: np.random.Generator, layout: np.ndarray) -> np.ndarray:
    """Float RGB `(H, W, 3)` with one texture per stuff class."""
    size = layout.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    pixels = np.zeros((size, size, 3), np.float32)
    scale = size / 128  # textures keep their look at any image size

    sky = np.array([135, 185, 235], np.float32) + (ys / size)[..., None] * np.array([40, 30, 10], np.float32)
    streaks = rng.normal(0, 14, size)[None, :] + 10 * np.sin(xs * 1.3 / scale + rng.uniform(0, 6))
    grass = np.array([70, 150, 60], np.float32) + streaks[..., None] * np.array([0.5, 1.0, 0.4], np.float32)
    waves = 18 * np.sin(ys * 0.9 / scale + 2.5 * np.sin(xs * 0.15 / scale) + rng.uniform(0, 6))
    water = np.array([40, 90, 170], np.float32) + waves[..., None] * np.array([0.4, 0.6, 1.0], np.float32)
    brick_h, brick_w = 8 * scale, 16 * scale
    row = np.floor(ys / brick_h)
    mortar = (ys % brick_h < max(1.0, scale)) | ((xs + (row % 2) * brick_w / 2) % brick_w < max(1.0, scale))
    wall = np.where(mortar[..., None], np.float32(205), np.array([160, 95, 75], np.float32))
    for index, texture in ((_SKY, sky), (_GRASS, grass), (_WATER, water), (_WALL, wall)):
        pixels[layout == index] = texture[layout == index]
    return pixels


def _thing_polygon(
    rng: np.random.Generator, kind: int, cx: float, cy: float, radius: float
) -> list[tuple[float, float]]:
    """Vertices of a disc (32-gon ellipse), rotated box, triangle or cross centred at (cx, cy)."""
    if kind == 0:
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        points = np.stack([np.cos(angles), np.sin(angles) * rng.uniform(0.8, 1.25)], 1)
    elif kind == 1:
        half_w, half_h = rng.uniform(0.75, 1.0, 2)
        points = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    elif kind == 2:
        points = np.array([[0.0, -1.0], [1.0, 0.9], [-1.0, 0.9]])
    else:
        a = 0.3  # half the arm width
        points = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]]
        )
    angle = rng.uniform(-0.35, 0.35)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T * radius + np.array([cx, cy])
    return [(float(x), float(y)) for x, y in points]


def _fill(polygon: list[tuple[float, float]], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(polygon, fill=255)
    return np.asarray(canvas) > 127


def _thing_colour(rng: np.random.Generator, kind: int, difficulty: float) -> np.ndarray:
    hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in _THING_RGB[kind]))
    hue = (hue + rng.uniform(-1, 1) * (0.02 + 0.12 * difficulty)) % 1.0
    value = min(1.0, value * rng.uniform(0.85, 1.1))
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255


def synthetic_scene(
    seed: int | tuple[int, ...], size: int = 128, difficulty: float = 0.3, max_things: int = 4, crowd_prob: float = 0.0
) -> SyntheticScene:
    """A deterministic scene for `seed`: 2-3 textured stuff regions and 1..`max_things + round(2 * difficulty)`
    overlapping things.

    A thing is placed only if every thing below it keeps at least half of its area visible; each thing is marked
    crowd with probability `crowd_prob`.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    rng = np.random.default_rng(seed)
    layout = _stuff_layout(rng, size)
    pixels = _stuff_pixels(rng, layout)
    segment_map = np.zeros((size, size), np.int32)
    segments: list[dict] = []
    for stuff in np.unique(layout):
        segments.append({"id": len(segments) + 1, "category_id": int(stuff), "isthing": False, "iscrowd": 0})
        segment_map[layout == stuff] = segments[-1]["id"]

    things: list[tuple[int, np.ndarray]] = []  # (segment id, whole-shape mask)
    polygons: dict[int, list[tuple[float, float]]] = {}
    min_radius = size * (0.11 - 0.04 * difficulty)
    for _ in range(int(rng.integers(1, max_things + round(2 * difficulty) + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(len(THING_CLASSES)))
            radius = rng.uniform(min_radius, size * 0.2)
            cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
            polygon = _thing_polygon(rng, kind, cx, cy, radius)
            shape = _fill(polygon, size)
            if shape.sum() < (0.05 * size) ** 2:
                continue
            if all(((segment_map == sid) & ~shape).sum() >= 0.5 * whole.sum() for sid, whole in things):
                break
        else:
            continue
        segment_id = len(segments) + 1
        colour = _thing_colour(rng, kind, difficulty)
        shading = (np.mgrid[0:size, 0:size][0] - cy) / max(radius, 1.0) * -12
        pixels[shape] = colour + shading[shape][:, None]
        segment_map[shape] = segment_id
        iscrowd = int(rng.random() < crowd_prob)
        segments.append({"id": segment_id, "category_id": kind, "isthing": True, "iscrowd": iscrowd})
        things.append((segment_id, shape))
        polygons[segment_id] = polygon

    if rng.random() < 0.5 * difficulty:  # an unlabelled distractor blob
        radius = size * rng.uniform(0.04, 0.08)
        cx, cy = rng.uniform(radius, size - radius, 2)
        blob = _fill(_thing_polygon(rng, 0, cx, cy, radius), size)
        pixels[blob] = rng.uniform(0, 255, 3)
        segment_map[blob] = 0

    pixels += rng.normal(0, 3 + 15 * difficulty, pixels.shape)
    present = set(np.unique(segment_map).tolist())
    segments = [segment for segment in segments if segment["id"] in present]
    polygons = {sid: polygon for sid, polygon in polygons.items() if sid in present}
    image = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8))
    return SyntheticScene(image=image, segment_map=segment_map, segments=segments, polygons=polygons)


def _bbox(mask: np.ndarray) -> list[int]:
    """COCO `[x, y, width, height]` of a mask's pixels."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _categories(
    names: tuple[str, ...],
    with_isthing: bool,
    thing_names: tuple[str, ...] = THING_CLASSES,
    category_ids: tuple[int, ...] = CATEGORY_IDS,
) -> list[dict]:
    categories = []
    for name, category_id in zip(names, category_ids):
        category = {"id": category_id, "name": name, "supercategory": "thing" if name in thing_names else "stuff"}
        if with_isthing:
            category["isthing"] = int(name in thing_names)
        categories.append(category)
    return categories


def _scenes(root: Path, counts: dict[str, int], seed: int, desc: str, **scene_kwargs):
    """Yield (split, index, stem, scene) for every image of every split."""
    total = sum(counts.values())
    with tqdm(total=total, desc=desc, unit="img", disable=total < 200) as progress:
        for split, count in counts.items():
            for index in range(count):
                scene = synthetic_scene((seed, _SPLITS[split], index), **scene_kwargs)
                yield split, index, f"{index + 1:012d}", scene
                progress.update()


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def write_synthetic_coco_panoptic(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    size: int = 128,
    seed: int = 0,
    difficulty: float = 0.3,
    max_things: int = 4,
    crowd_prob: float = 0.0,
) -> Path:
    """Write a COCO panoptic data set of `synthetic_scene`s (the layout of `write_coco_panoptic_scenes`). Returns
    `root`."""
    counts = {"train": num_train, "val": num_val}
    scenes = _scenes(Path(root), counts, seed, "synthetic COCO panoptic", size=size, difficulty=difficulty,
                     max_things=max_things, crowd_prob=crowd_prob)  # fmt: skip
    return write_coco_panoptic_scenes(root, scenes, list(counts), seed, CLASS_NAMES, THING_CLASSES, CATEGORY_IDS)


def write_coco_panoptic_scenes(
    root: str | os.PathLike,
    scenes: Iterable[tuple[str, int, str, SyntheticScene]],
    splits: Sequence[str],
    seed: int,
    class_names: tuple[str, ...],
    thing_names: tuple[str, ...],
    category_ids: Sequence[int],
) -> Path:
    """Write `scenes` ((split, index, stem, scene), their `category_id`s indexing `class_names`) as a COCO panoptic
    data set: `{split}2017/*.jpg`, `annotations/panoptic_{split}2017.json` (categories with ids `category_ids` and
    `isthing` for `thing_names`, `segments_info` with `area`, `bbox`, `iscrowd`) and
    `annotations/panoptic_{split}2017/*.png` (RGB segment ids; the ids are random in [1, 256^3), drawn from `seed`, so
    all three channels are used). Returns `root`."""
    root = Path(root)
    categories = _categories(class_names, True, thing_names, tuple(category_ids))
    documents = {split: {"images": [], "annotations": [], "categories": categories} for split in splits}
    for split in splits:
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"panoptic_{split}2017").mkdir(parents=True, exist_ok=True)
    for split, index, stem, scene in scenes:
        rng = np.random.default_rng((seed, _SPLITS[split], index, 1))
        coco_ids = rng.choice(np.arange(1, 256**3), size=len(scene.segments), replace=False)
        id_map = np.zeros_like(scene.segment_map, dtype=np.int64)
        segments_info = []
        for segment, coco_id in zip(scene.segments, coco_ids):
            mask = scene.segment_map == segment["id"]
            id_map[mask] = coco_id
            segments_info.append({
                "id": int(coco_id), "category_id": category_ids[segment["category_id"]], "iscrowd": segment["iscrowd"],
                "area": int(mask.sum()), "bbox": _bbox(mask),
            })  # fmt: skip
        scene.image.save(root / f"{split}2017" / f"{stem}.jpg", quality=95, subsampling=0)
        Image.fromarray(id_to_rgb(id_map)).save(root / "annotations" / f"panoptic_{split}2017" / f"{stem}.png")
        height, width = scene.segment_map.shape
        documents[split]["images"].append({"id": index + 1, "file_name": f"{stem}.jpg", "height": height, "width": width})
        documents[split]["annotations"].append(
            {"image_id": index + 1, "file_name": f"{stem}.png", "segments_info": segments_info}
        )
    for split, document in documents.items():
        _write_json(root / "annotations" / f"panoptic_{split}2017.json", document)
    return root


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (`counts` as a list, column-major, starting with a run of zeros) of an `(H, W)` mask."""
    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def write_synthetic_coco_instance(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    size: int = 128,
    seed: int = 0,
    difficulty: float = 0.3,
    max_things: int = 4,
    crowd_prob: float = 0.0,
) -> Path:
    """Write a COCO instance data set of the things: `{split}2017/*.jpg` and `annotations/instances_{split}2017.json`.
    A thing is annotated by the polygon of its whole shape (so occluded instances overlap, as amodal COCO polygons
    can); a crowd thing by the uncompressed RLE of its visible pixels, as COCO stores crowds. Returns `root`."""
    root = Path(root)
    counts = {"train": num_train, "val": num_val}
    documents = {
        split: {"images": [], "annotations": [], "categories": _categories(THING_CLASSES, False)} for split in counts
    }
    for split in counts:
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    scenes = _scenes(root, counts, seed, "synthetic COCO instance", size=size, difficulty=difficulty,
                     max_things=max_things, crowd_prob=crowd_prob)  # fmt: skip
    for split, index, stem, scene in scenes:
        scene.image.save(root / f"{split}2017" / f"{stem}.jpg", quality=95, subsampling=0)
        documents[split]["images"].append({"id": index + 1, "file_name": f"{stem}.jpg", "height": size, "width": size})
        for segment in scene.segments:
            if not segment["isthing"]:
                continue
            visible = scene.segment_map == segment["id"]
            if segment["iscrowd"]:
                segmentation = _uncompressed_rle(visible)
            else:
                segmentation = [[round(c, 2) for point in scene.polygons[segment["id"]] for c in point]]
            annotations = documents[split]["annotations"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1, "category_id": CATEGORY_IDS[segment["category_id"]],
                "iscrowd": segment["iscrowd"], "segmentation": segmentation, "area": int(visible.sum()),
                "bbox": _bbox(visible),
            })  # fmt: skip
    for split, document in documents.items():
        _write_json(root / "annotations" / f"instances_{split}2017.json", document)
    return root


def write_synthetic_ade20k(
    root: str | os.PathLike, num_train: int, num_val: int, size: int = 128, seed: int = 0, difficulty: float = 0.3
) -> Path:
    """Write an ADE20K-style semantic data set: `images/{training,validation}/*.jpg` and
    `annotations/{training,validation}/*.png` holding class index + 1 (`CLASS_NAMES` order; 0 = unlabelled).
    Returns `root`."""
    root = Path(root)
    folders, prefixes = {"train": "training", "val": "validation"}, {"train": "ADE_train", "val": "ADE_val"}
    for folder in folders.values():
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    scenes = _scenes(
        root, {"train": num_train, "val": num_val}, seed, "synthetic ADE20K", size=size, difficulty=difficulty
    )
    for split, _index, stem, scene in scenes:
        name = f"{prefixes[split]}_{stem[-8:]}"
        scene.image.save(root / "images" / folders[split] / f"{name}.jpg", quality=95, subsampling=0)
        Image.fromarray((scene.semantic_map + 1).astype(np.uint8)).save(
            root / "annotations" / folders[split] / f"{name}.png"
        )
    return root
