"""The training recipe `eomt train` uses: chosen for the start point and the data, every choice overridable.

Two recipes, by start point:
- `authors` (a pre-trained backbone or an EoMT checkpoint): the authors' settings, which assume pre-trained
  features: lr 1e-4, layer-wise lr decay 0.8 (the early blocks barely move), gradient clipping at 0.01, a 500-step
  warm-up of the new parameters before a 1000-step warm-up of the backbone (shortened in proportion in runs too short
  for them).
- `scratch` (random weights, `--model`): every block has to learn, so none is held back: lr 1e-3 without layer
  decay, gradient clipping at 1.0, a short warm-up of the new parameters (5% of the steps), then one of the backbone
  (20% of the steps), and no scale jitter in short runs.

The augmentation follows the data: the large-scale-jitter range is chosen from the sizes of the things the data set
holds, measured on a sample of its training images at the scale at which they fit the input (see
`augmentation_scale`). Measurements behind these choices: docs/benchmarks/learning-ablation.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from .data.base import DatasetInfo, SampleError, SegmentationSource
from .settings import TrainSettings

logger = logging.getLogger(__name__)

# The authors' settings (facts from their released configuration; see REFERENCE.md).
AUTHORS = dict(learning_rate=1e-4, layer_decay=0.8, max_grad_norm=0.01, head_warmup_steps=500, backbone_warmup_steps=1000)
SCRATCH = dict(learning_rate=1e-3, layer_decay=1.0, max_grad_norm=1.0)
SCRATCH_WARMUP_FRACTION = 0.05
# The random backbone then warms up over this share of the run: at full lr at once, some runs stalled (set C, seed 0).
SCRATCH_BACKBONE_WARMUP_FRACTION = 0.2
# The authors' two warm-ups take at most this share of a run.
AUTHORS_WARMUP_FRACTION = 0.25
# Up to this many passes over the training data, a from-scratch run trains without scale jitter (see
# `augmentation_scale`).
SCRATCH_JITTER_PASSES = 10
# Images decoded to measure the object sizes of a data set.
SAMPLE_IMAGES = 64


@dataclass(frozen=True)
class DataStatistics:
    """Object sizes of a sample of training images, in input pixels at the scale at which each image fits the input:
    the 10th, 50th and 90th percentiles of the side (square root of the area) of the non-crowd things (all segments
    when the data set has no things), and the median longest image side before that scaling."""

    images: int
    image_side: float
    object_sides: tuple[float, float, float]
    things: bool


def data_statistics(source: SegmentationSource, input_size: int, max_images: int = SAMPLE_IMAGES) -> DataStatistics | None:
    """`DataStatistics` of up to `max_images` training images spread over `source`; None for a streamed source or one
    without segments."""
    if isinstance(source.records, datasets.IterableDataset) or len(source) == 0:
        return None
    indices = np.unique(np.linspace(0, len(source) - 1, min(max_images, len(source))).round().astype(int))
    things = set(source.info.thing_ids)
    thing_sides, all_sides, image_sides = [], [], []
    for index in indices:
        try:
            sample = source[int(index)]
        except SampleError as error:  # an unchecked set (--skip-validation): training names the file when it gets there
            logger.warning("data statistics: skipped a record that does not decode (%s)", error)
            continue
        height, width = sample.image.shape[:2]
        scale = input_size / max(height, width)
        image_sides.append(max(height, width))
        target = sample.target.select(~sample.target.is_crowd)
        areas = target.masks.reshape(len(target), -1).sum(1)
        for label, area in zip(target.labels.tolist(), areas.tolist()):
            if area > 0:
                side = math.sqrt(area) * scale
                all_sides.append(side)
                if label in things:
                    thing_sides.append(side)
    sides = thing_sides or all_sides
    if not sides:
        return None
    quantiles = tuple(float(q) for q in np.percentile(sides, (10, 50, 90)))
    return DataStatistics(len(image_sides), float(np.median(image_sides)), quantiles, bool(thing_sides))


def is_short_scratch_run(from_scratch: bool, passes: float | None) -> bool:
    """A run from random weights over at most `SCRATCH_JITTER_PASSES` passes: it trains without scale jitter."""
    return from_scratch and passes is not None and passes <= SCRATCH_JITTER_PASSES


def augmentation_scale(
    statistics: DataStatistics | None, patch_size: int, task: str, from_scratch: bool, passes: float | None = None
) -> tuple[tuple[float, float], str]:
    """The large-scale-jitter range and why.

    A short run from random weights (at most `SCRATCH_JITTER_PASSES` passes over the data) trains on the images at
    the scale at which they fit the input, as evaluation sees them: with few views per image, zoomed views cost more
    than they regularise (measured: PQ 76.2 without jitter against 71.4 with COCO's 0.1-2.0 and 73.4 with 0.5-1.5 on
    set A of the learning benchmark, 6.7 passes).

    Otherwise the range is the authors' (0.1-2.0 for COCO, 0.5-2.0 for semantic data sets), made for 640 px crops of
    large images with 16 px patches, where even a 0.1 zoom-out leaves the large things several patches across. On small
    images or small objects the same zoom-out shrinks them below one patch, and those views teach nothing. So the lower
    bound is raised to the scale at which a reference thing still spans one patch: the median thing for a model
    trained from scratch, the large things (90th percentile) for a pre-trained one (whose features already know small
    objects; COCO keeps 0.1). The upper bound stays.
    """
    if is_short_scratch_run(from_scratch, passes):
        return (1.0, 1.0), (f"no scale jitter: {passes:.1f} passes over the data from random weights (up to "
                            f"{SCRATCH_JITTER_PASSES}) learn more from views at the evaluation scale")  # fmt: skip
    low, high = (0.5, 2.0) if task == "semantic" else (0.1, 2.0)
    if statistics is None:
        return (low, high), "the authors' range for the task (the data was not inspected)"
    index, which = (1, "median") if from_scratch else (2, "large (90th percentile)")
    side = statistics.object_sides[index]
    objects = "thing" if statistics.things else "segment"
    needed = min(1.0, math.ceil(20 * patch_size / side) / 20)  # one patch across, rounded up to 0.05
    measured = (f"the {which} {objects} of {statistics.images} training images is {side:.0f} px at the input scale "
                f"({side / patch_size:.1f} patches of {patch_size} px)")  # fmt: skip
    if needed <= low:
        return (low, high), f"the authors' range: {measured}, still a patch across at {low:g}"
    reason = f"{measured}: below {needed:g} it would shrink under one patch (the authors' {low:g} is for large images)"
    return (needed, high), reason


@dataclass
class TrainingRecipe:
    """The resolved recipe: `values` by `TrainSettings` field name, and for each the reason it was chosen."""

    name: str
    values: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def describe(self) -> list[str]:
        """The block of lines `eomt train` prints at start-up."""
        lines = [f"training recipe: {self.name}"]
        for name, value in self.values.items():
            shown = " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else (
                "default" if value is None else f"{value:g}" if isinstance(value, float) else str(value))  # fmt: skip
            lines.append(f"  {name.replace('_', '-')}: {shown} ({self.reasons[name]})")
        return lines


def authors_warmup(total_steps: int) -> tuple[dict[str, int], dict[str, str]]:
    """The authors' 500 + 1000 warm-up steps (their 88k-step COCO schedule spends 1.7% on them), shortened in
    proportion to `AUTHORS_WARMUP_FRACTION` of a run too short for them (a 1200-step run would end with the backbone
    still warming up): the steps and the reasons, empty when they fit."""
    head, backbone = AUTHORS["head_warmup_steps"], AUTHORS["backbone_warmup_steps"]
    limit = AUTHORS_WARMUP_FRACTION * total_steps
    if head + backbone <= limit:
        return {}, {}
    factor = limit / (head + backbone)
    steps = {"head_warmup_steps": max(1, round(head * factor)), "backbone_warmup_steps": round(backbone * factor)}
    reasons = {
        key: f"the authors' {authors}, shortened with the other warm-up to {AUTHORS_WARMUP_FRACTION:.0%} of the "
        f"{total_steps} steps so that the backbone reaches its peak lr"
        for key, authors in (("head_warmup_steps", head), ("backbone_warmup_steps", backbone))
    }
    return steps, reasons


def choose_recipe(
    settings: TrainSettings,
    source: SegmentationSource,
    input_size: int,
    patch_size: int,
    total_steps: int,
    passes: float | None = None,
) -> TrainingRecipe:
    """The recipe for `settings` (its given values win) on the training data `source`, for a model of `patch_size`
    trained for `total_steps` optimizer steps at `input_size`, `passes` times over the data (None: unknown)."""
    from_scratch = settings.recipe == "scratch" or (settings.recipe == "auto" and settings.size is not None)
    if from_scratch:
        name = "from scratch (random initialisation)" if settings.recipe == "auto" else "from scratch (--recipe scratch)"
        warmup = max(1, round(SCRATCH_WARMUP_FRACTION * total_steps))
        backbone_warmup = round(SCRATCH_BACKBONE_WARMUP_FRACTION * total_steps)
        chosen = {**SCRATCH, "head_warmup_steps": warmup, "backbone_warmup_steps": backbone_warmup}
        why = {
            "learning_rate": "random weights learn at a higher rate than pre-trained ones are tuned at",
            "layer_decay": "no decay: the early blocks are random and must learn as much as the late ones",
            "max_grad_norm": "catches outlier batches of a random model (the authors' 0.01 measured no better)",
            "head_warmup_steps": f"{SCRATCH_WARMUP_FRACTION:.0%} of the {total_steps} steps",
            "backbone_warmup_steps": f"{SCRATCH_BACKBONE_WARMUP_FRACTION:.0%} of the steps: a random backbone put to the "
            "full rate at once stalled some runs",
        }
    else:
        start = "a pre-trained backbone" if settings.backbone is not None else "a checkpoint"
        name = f"the authors' ({start})" if settings.recipe == "auto" else "the authors' (--recipe authors)"
        chosen = dict(AUTHORS)
        why = {key: "the authors' value for a pre-trained start" for key in chosen}
        shortened, reasons = authors_warmup(total_steps)
        chosen.update(shortened)
        why.update(reasons)
    info: DatasetInfo = source.info
    inspect = settings.augmentation_scale is None and not is_short_scratch_run(from_scratch, passes)
    statistics = data_statistics(source, input_size) if inspect else None
    scale, scale_reason = augmentation_scale(statistics, patch_size, info.task, from_scratch, passes)
    chosen.update(augmentation_scale=scale, color_jitter=info.task == "semantic", num_points=None, no_object_weight=None)
    why.update(
        augmentation_scale=scale_reason,
        color_jitter="the authors' choice for the task (on for semantic segmentation, off for COCO)",
        num_points="the loss's default for the model",
        no_object_weight="the model config's",
    )
    values, reasons = {}, {}
    for key, value in chosen.items():
        given = getattr(settings, key)
        values[key] = given if given is not None else value
        reasons[key] = "given" if given is not None else why[key]
    return TrainingRecipe(name, values, reasons)
