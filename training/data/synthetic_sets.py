"""Generated panoptic data sets that the demo's recipe was never tuned on, for the learning benchmark.

The scenes are made differently from `training.data.synthetic` (whose horizon layouts, four shapes and four textures
the demo was tuned to): stuff is a warped Voronoi partition of the image into textured regions (sand, checkerboard,
stripes, dots, plasma, marble, gravel, waves), and things are stars, rings (with a hole showing the stuff behind),
hexagons, crescents, diamonds, arrows or smooth random blobs, with per-instance colour drawn around a class colour,
optionally striped. `SCENE_SETS` holds three sets that differ in image size, object size and count, class count and
thing/stuff mix; `write_scene_set` writes one in the COCO panoptic layout (`write_coco_panoptic_scenes`).
Scenes depend only on (set, seed, split, index).
"""

from __future__ import annotations

import colorsys
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .synthetic import SyntheticScene, write_coco_panoptic_scenes

_SPLITS = ("train", "val")

# Base hue (in turns) of each class; instances vary around it by the set's `hue_jitter`.
_HUES = {
    "star": 0.0, "ring": 0.55, "hexagon": 0.15, "crescent": 0.75, "diamond": 0.33, "arrow": 0.9, "blob": 0.08,
    "sand": 0.11, "checker": 0.6, "stripes": 0.4, "dots": 0.85, "plasma": 0.5, "marble": 0.05, "gravel": 0.7,
    "waves": 0.58,
}  # fmt: skip
THING_SHAPES = ("star", "ring", "hexagon", "crescent", "diamond", "arrow", "blob")
STUFF_TEXTURES = ("sand", "checker", "stripes", "dots", "plasma", "marble", "gravel", "waves")


@dataclass(frozen=True)
class SceneSet:
    """How the scenes of one set are made.

    Args:
        name: short name (used in reports and folder names).
        image_size: side of the square images.
        things: thing classes, each a shape of `THING_SHAPES`.
        stuff: stuff classes, each a texture of `STUFF_TEXTURES`.
        things_per_image: (min, max) things drawn per image (some may be rejected for hiding others).
        thing_radius: (min, max) radius of a thing as a fraction of `image_size`.
        stuff_regions: (min, max) Voronoi cells of the stuff partition.
        hue_jitter: per-instance hue variation of things, in turns (0.5: any colour).
        striped_things: probability that a thing is filled with stripes instead of a flat colour.
        noise: standard deviation of the pixel noise (0-255 scale).
        void_scribbles: probability of an unlabelled (void) scribble per image.
        description: one line for reports.
    """

    name: str
    image_size: int
    things: tuple[str, ...]
    stuff: tuple[str, ...]
    things_per_image: tuple[int, int]
    thing_radius: tuple[float, float]
    stuff_regions: tuple[int, int] = (3, 6)
    hue_jitter: float = 0.08
    striped_things: float = 0.0
    noise: float = 6.0
    void_scribbles: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [shape for shape in self.things if shape not in THING_SHAPES]
        unknown += [texture for texture in self.stuff if texture not in STUFF_TEXTURES]
        if unknown:
            raise ValueError(f"scene set {self.name}: unknown shapes/textures {unknown}; choose from "
                             f"{THING_SHAPES} and {STUFF_TEXTURES}")  # fmt: skip
        if not self.things or len(self.stuff) < 2:
            raise ValueError(f"scene set {self.name}: needs at least one thing class and two stuff classes")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Things first, then stuff (as COCO orders its categories)."""
        return self.things + self.stuff

    @property
    def category_ids(self) -> tuple[int, ...]:
        """COCO-style category ids with gaps."""
        return tuple(3 * index + 2 for index in range(len(self.class_names)))

    def resized(self, image_size: int) -> SceneSet:
        """The same set at another image size (object sizes and textures scale with it)."""
        return dataclasses.replace(self, image_size=int(image_size))


SCENE_SETS: dict[str, SceneSet] = {
    "A": SceneSet(
        "A", 128, things=("star", "ring", "hexagon"), stuff=("sand", "checker", "stripes"), things_per_image=(1, 5),
        thing_radius=(0.08, 0.2), description="3 thing + 3 stuff classes, medium things",
    ),
    "B": SceneSet(
        "B", 96, things=("star", "ring", "hexagon", "crescent", "diamond", "arrow"), stuff=("plasma", "dots"),
        things_per_image=(4, 12), thing_radius=(0.05, 0.1), stuff_regions=(2, 4), hue_jitter=0.12, noise=8.0,
        void_scribbles=0.3, description="6 thing + 2 stuff classes, many small things, void scribbles",
    ),
    "C": SceneSet(
        "C", 256, things=("blob", "crescent"), stuff=("marble", "gravel", "waves", "checker", "sand"),
        things_per_image=(1, 3), thing_radius=(0.16, 0.32), stuff_regions=(4, 8), striped_things=0.5, noise=5.0,
        description="2 thing + 5 stuff classes, few large (often striped) things",
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Textures and layouts
# ----------------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """`(size, size)` float32 noise in about [-1, 1], smooth over `size / cells` pixels (bicubic upsampling)."""
    coarse = Image.fromarray(rng.uniform(-1, 1, (cells, cells)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32)


def _colour(rng: np.random.Generator, hue: float, jitter: float, saturation: float = 0.6, value: float = 0.8) -> np.ndarray:
    hue = (hue + rng.uniform(-jitter, jitter)) % 1.0
    saturation = np.clip(saturation * rng.uniform(0.8, 1.2), 0, 1)
    rgb = colorsys.hsv_to_rgb(hue, saturation, np.clip(value * rng.uniform(0.85, 1.15), 0, 1))
    return np.array(rgb, np.float32) * 255


def _rotated(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs * np.cos(angle) + ys * np.sin(angle), -xs * np.sin(angle) + ys * np.cos(angle)


def _texture(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Float RGB `(size, size, 3)` of one stuff texture; periods scale with `size / 128`."""
    scale = size / 128
    base = _colour(rng, _HUES[kind], 0.04)
    other = _colour(rng, _HUES[kind] + 0.08, 0.04, value=0.5)
    u, v = _rotated(size, rng.uniform(0, np.pi))
    if kind == "sand":
        return base + rng.normal(0, 18, (size, size, 1)).astype(np.float32) + 20 * _smooth_noise(rng, size, 4)[..., None]
    if kind == "checker":
        period = rng.uniform(6, 12) * scale
        cells = (np.floor(u / period) + np.floor(v / period)) % 2
        return np.where(cells[..., None] > 0, base, other)
    if kind == "stripes":
        weight = (np.sin(u * 2 * np.pi / (rng.uniform(5, 9) * scale)) > 0)[..., None]
        return np.where(weight, base, other)
    if kind == "dots":
        period = rng.uniform(7, 11) * scale
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return np.where((du**2 + dv**2 < (0.3 * period) ** 2)[..., None], other, base)
    if kind == "plasma":
        field = _smooth_noise(rng, size, 5) + 0.5 * _smooth_noise(rng, size, 11)
        return base + field[..., None] * np.array([40, -30, 30], np.float32)
    if kind == "marble":
        veins = np.abs(np.sin(u * 2 * np.pi / (rng.uniform(14, 24) * scale) + 5 * _smooth_noise(rng, size, 6)))
        return other + veins[..., None] * (base - other)
    if kind == "gravel":
        cell = max(2, int(round(rng.uniform(4, 7) * scale)))
        grid = rng.uniform(0.55, 1.25, (size // cell + 2, size // cell + 2)).astype(np.float32)
        stones = np.kron(grid, np.ones((cell, cell), np.float32))[:size, :size]
        return base * stones[..., None]
    # waves
    waves = np.sin(u * 2 * np.pi / (rng.uniform(10, 16) * scale) + 2 * np.sin(v * 2 * np.pi / (40 * scale)))
    return base + waves[..., None] * np.array([10, 20, 35], np.float32)


def _stuff_layout(rng: np.random.Generator, spec: SceneSet, size: int) -> np.ndarray:
    """Stuff class index (into `spec.stuff`) per pixel: a Voronoi partition with warped borders; at least two
    classes when the image has two or more cells."""
    cells = int(rng.integers(spec.stuff_regions[0], spec.stuff_regions[1] + 1))
    centres = rng.uniform(0, size, (cells, 2)).astype(np.float32)
    classes = rng.integers(len(spec.stuff), size=cells)
    if cells > 1 and len(set(classes.tolist())) == 1:
        classes[1] = (classes[0] + 1 + rng.integers(len(spec.stuff) - 1)) % len(spec.stuff)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    warp_x, warp_y = (size * 0.12 * _smooth_noise(rng, size, 4) for _ in range(2))
    distance = (xs[None] + warp_x - centres[:, 0, None, None]) ** 2 + (ys[None] + warp_y - centres[:, 1, None, None]) ** 2
    return classes[distance.argmin(0)]


# ----------------------------------------------------------------------------------------------------------------------
# Things
# ----------------------------------------------------------------------------------------------------------------------


def _polygon(points: np.ndarray, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T * radius + np.array([cx, cy])
    return [(float(x), float(y)) for x, y in points]


def _shape_mask(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float, size: int) -> np.ndarray:
    """`(size, size)` bool mask of one thing of shape `kind`."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    angle = rng.uniform(0, 2 * np.pi)
    turns = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    if kind == "star":
        points = 5 * 2
        radii = np.where(np.arange(points) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        t = np.linspace(0, 2 * np.pi, points, endpoint=False)
        draw.polygon(_polygon(np.stack([np.cos(t) * radii, np.sin(t) * radii], 1), cx, cy, radius, angle), fill=255)
    elif kind == "ring":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        hole = radius * rng.uniform(0.45, 0.6)
        draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    elif kind == "hexagon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        draw.polygon(_polygon(np.stack([np.cos(t), np.sin(t)], 1), cx, cy, radius, angle), fill=255)
    elif kind == "crescent":
        draw.polygon(_polygon(np.stack([np.cos(turns), np.sin(turns)], 1), cx, cy, radius, 0), fill=255)
        shift = rng.uniform(0.35, 0.55)
        offset = shift / 0.9 * np.array([np.cos(angle), np.sin(angle)])
        bite = np.stack([np.cos(turns), np.sin(turns)], 1) * 0.9 + offset
        draw.polygon(_polygon(bite, cx, cy, radius, 0), fill=0)
    elif kind == "diamond":
        points = np.array([[0, -1.0], [0.55, 0], [0, 1.0], [-0.55, 0]])
        draw.polygon(_polygon(points, cx, cy, radius, angle), fill=255)
    elif kind == "arrow":
        points = np.array([[1.0, 0], [0.1, 0.75], [0.1, 0.3], [-1, 0.3], [-1, -0.3], [0.1, -0.3], [0.1, -0.75]])
        draw.polygon(_polygon(points, cx, cy, radius, angle), fill=255)
    else:  # blob: a smooth random closed curve
        wobble = 1 + sum(rng.uniform(0, 0.18) * np.cos(k * turns + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        outline = np.stack([np.cos(turns) * wobble, np.sin(turns) * wobble], 1)
        draw.polygon(_polygon(outline, cx, cy, radius, angle), fill=255)
    return np.asarray(canvas) > 127


def _thing_pixels(rng: np.random.Generator, spec: SceneSet, kind: str, size: int) -> np.ndarray:
    """Float RGB `(size, size, 3)` fill of one thing: a class colour, shaded, sometimes striped."""
    colour = _colour(rng, _HUES[kind], spec.hue_jitter, saturation=0.85, value=0.9)
    u, v = _rotated(size, rng.uniform(0, np.pi))
    fill = colour + (v / size - 0.5)[..., None] * rng.uniform(-40, 40)
    if rng.random() < spec.striped_things:
        stripes = np.sin(u * 2 * np.pi / (rng.uniform(6, 10) * size / 128)) > 0
        fill = np.where(stripes[..., None], fill, fill * 0.45)
    return fill


def scene(spec: SceneSet, seed: int | tuple[int, ...]) -> SyntheticScene:
    """A deterministic scene of set `spec` for `seed` (segment `category_id`s index `spec.class_names`)."""
    rng = np.random.default_rng(seed)
    size = spec.image_size
    layout = _stuff_layout(rng, spec, size)
    pixels = np.zeros((size, size, 3), np.float32)
    segment_map = np.zeros((size, size), np.int32)
    segments: list[dict] = []
    num_things = len(spec.things)
    for stuff in np.unique(layout):
        region = layout == stuff
        pixels[region] = _texture(rng, spec.stuff[stuff], size)[region]
        segments.append({"id": len(segments) + 1, "category_id": num_things + int(stuff), "isthing": False, "iscrowd": 0})
        segment_map[region] = segments[-1]["id"]

    placed: list[tuple[int, int]] = []  # (segment id, area when placed)
    for _ in range(int(rng.integers(spec.things_per_image[0], spec.things_per_image[1] + 1))):
        label = int(rng.integers(num_things))
        radius = size * rng.uniform(*spec.thing_radius)
        cx, cy = rng.uniform(0, size, 2)  # things may be cut by the border
        mask = _shape_mask(rng, spec.things[label], cx, cy, radius, size)
        if mask.sum() < max(12, 0.2 * np.pi * radius**2):  # mostly outside the image
            continue
        if any(((segment_map == sid) & ~mask).sum() < 0.4 * area for sid, area in placed):  # would hide another thing
            continue
        segment_id = len(segments) + 1
        pixels[mask] = _thing_pixels(rng, spec, spec.things[label], size)[mask]
        segment_map[mask] = segment_id
        segments.append({"id": segment_id, "category_id": label, "isthing": True, "iscrowd": 0})
        placed.append((segment_id, int(mask.sum())))

    if rng.random() < spec.void_scribbles:  # an unlabelled scribble: void pixels the model must not claim
        canvas = Image.new("L", (size, size), 0)
        points = [tuple(point) for point in rng.uniform(0, size, (4, 2)).tolist()]
        ImageDraw.Draw(canvas).line(points, fill=255, width=max(2, size // 40))
        scribble = np.asarray(canvas) > 127
        pixels[scribble] = rng.uniform(0, 255, 3)
        segment_map[scribble] = 0

    pixels += rng.normal(0, spec.noise, pixels.shape)
    present = set(np.unique(segment_map).tolist())
    segments = [segment for segment in segments if segment["id"] in present]
    image = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8))
    return SyntheticScene(image=image, segment_map=segment_map, segments=segments)


def write_scene_set(
    root: str | os.PathLike, spec: SceneSet | str, num_train: int, num_val: int, seed: int = 0,
    image_size: int | None = None, num_test: int = 0,
) -> Path:  # fmt: skip
    """Write set `spec` (a `SceneSet` or a key of `SCENE_SETS`), at `image_size` if given, in the COCO panoptic layout
    (`train` and `val` splits, and `test` when `num_test` > 0). Returns `root`."""
    if isinstance(spec, str):
        if spec not in SCENE_SETS:
            raise ValueError(f"unknown scene set {spec!r}; choose from {', '.join(SCENE_SETS)}")
        spec = SCENE_SETS[spec]
    if image_size is not None:
        spec = spec.resized(image_size)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    base = sum(ord(c) for c in spec.name) * 1000  # different sets draw different scenes for the same seed

    def scenes():
        total = sum(counts.values())
        with tqdm(total=total, desc=f"scene set {spec.name}", unit="img", disable=total < 200) as bar:
            for split_index, (split, count) in enumerate(counts.items()):
                for index in range(count):
                    yield split, index, f"{index + 1:012d}", scene(spec, (base + seed, split_index, index))
                    bar.update()

    splits = _SPLITS + (("test",) if num_test else ())
    return write_coco_panoptic_scenes(root, scenes(), splits, seed, spec.class_names, spec.things, spec.category_ids)
