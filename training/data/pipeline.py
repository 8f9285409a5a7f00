"""Training and evaluation data sets over a `SegmentationSource`, and the factories the trainer and the CLI use.

Training example (fixed square input, after `augment`):
    {"pixel_values": float32 (3, S, S) normalised, "mask_labels": bool (n, S, S), "class_labels": int64 (n,)}
Evaluation example (original resolution; resizing and windows are the image processor's job):
    {"image": uint8 (H, W, 3), "image_id", "file_name", "target": MaskTarget (crowd segments kept), plus
     panoptic: "segmentation" int32 (H, W) (0 = void, segment i + 1 = target mask i) and
               "segments_info" [{"id", "label_id", "iscrowd", "isthing"}],
     semantic: "semantic_map" int64 (H, W) with `info.ignore_index` where unlabelled}
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import TrainerCallback

from image_processing.targets import MaskTarget
from image_processing.transforms import normalize_image

from .augmentation import AugmentationConfig, augment, recipe_augmentation, sample_rng
from .base import DatasetInfo, Sample, SampleError, SegmentationSource
from .coco import load_coco_instance, load_coco_panoptic
from .semantic import load_ade20k, load_cityscapes

logger = logging.getLogger(__name__)

FORMATS = ("coco_panoptic", "coco_instance", "ade20k", "cityscapes", "hf_disk", "hub")


class _EpochAware:
    """`info` of the wrapped source and the epoch, kept in shared memory so DataLoader workers (persistent ones too)
    see `set_epoch`."""

    source: SegmentationSource

    def __init__(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def info(self) -> DatasetInfo:
        return self.source.info

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))


class TrainDataset(_EpochAware, torch.utils.data.Dataset):
    """Augmented training examples of `source` (see the module docstring).

    The draws for source record `i` come from `sample_rng(seed, epoch, i)`; call `set_epoch` at the start of every
    epoch (`EpochCallback` does it under `Trainer`). Records whose annotations hold no non-crowd segment are left
    out (with a warning).
    """

    def __init__(self, source: SegmentationSource, augmentation: AugmentationConfig, seed: int = 0) -> None:
        self.source, self.augmentation, self.seed = source, augmentation, int(seed)
        counts = source.training_segment_counts()
        self.indices = np.arange(len(source)) if counts is None else np.flatnonzero(counts > 0)
        left_out = len(source) - len(self.indices)
        if left_out:
            logger.warning("%s: %d of %d images have no non-crowd segment and are left out of training",
                           source.info.name, left_out, len(source))  # fmt: skip
        if len(self.indices) == 0:
            raise ValueError(f"{source.info.name}: no image with a non-crowd segment to train on")
        super().__init__()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = int(self.indices[index])
        return training_example(self.source[record], self.augmentation, sample_rng(self.seed, self.epoch, record))


def training_example(
    sample: Sample, augmentation: AugmentationConfig, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """The model's training input from one decoded sample (see the module docstring)."""
    try:
        image, target = augment(sample.image, sample.target, rng, augmentation)
    except Exception as error:
        raise SampleError(f"{sample.file_name}: augmentation failed: {type(error).__name__}: {error}") from error
    return {
        "pixel_values": normalize_image(image),  # (3, S, S) float32
        "mask_labels": torch.from_numpy(target.masks),  # (n, S, S) bool
        "class_labels": torch.from_numpy(target.labels),  # (n,) int64
    }


def segmentation_and_segments(target: MaskTarget, thing_ids: Sequence[int]) -> tuple[np.ndarray, list[dict]]:
    """Panoptic segment-id map `(H, W)` int32 (0 = void, mask i -> id i + 1) and its `segments_info` from a target
    of disjoint masks."""
    segmentation = np.zeros(target.size, np.int32)
    for index, mask in enumerate(target.masks):
        segmentation[mask] = index + 1
    things = set(thing_ids)
    segments = [
        {"id": index + 1, "label_id": int(label), "iscrowd": bool(crowd), "isthing": int(label) in things}
        for index, (label, crowd) in enumerate(zip(target.labels, target.is_crowd))
    ]
    return segmentation, segments


def evaluation_example(sample: Sample, info: DatasetInfo) -> dict[str, Any]:
    """The ground truth of one sample at original resolution, as the metrics take it (see the module docstring)."""
    example = {
        "image": sample.image,
        "image_id": sample.image_id,
        "file_name": sample.file_name,
        "target": sample.target,
    }
    if info.task == "panoptic":
        example["segmentation"], example["segments_info"] = segmentation_and_segments(sample.target, info.thing_ids)
    elif info.task == "semantic":
        example["semantic_map"] = sample.target.semantic_map(info.ignore_index)
    return example


class EvalDataset(torch.utils.data.Dataset):
    """Evaluation examples of `source` at original resolution (see the module docstring)."""

    def __init__(self, source: SegmentationSource) -> None:
        self.source = source

    @property
    def info(self) -> DatasetInfo:
        return self.source.info

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return evaluation_example(self.source[index], self.info)


class StreamingDataset(_EpochAware, torch.utils.data.IterableDataset):
    """Training (with `augmentation`) or evaluation (without) examples of a streamed `datasets.IterableDataset`
    (a `HubSource` built by `from_hf_dataset` on one). DataLoader workers and processes read disjoint shards, as
    `datasets` splits them. A sample's augmentation draws come from `sample_rng(seed, epoch, key)`, with `key` a hash
    of its decoded pixels, so they do not depend on which worker reads it either."""

    def __init__(
        self, source: SegmentationSource, augmentation: AugmentationConfig | None = None, seed: int = 0
    ) -> None:
        self.source, self.augmentation, self.seed = source, augmentation, int(seed)
        super().__init__()

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.source.records, "set_epoch"):  # reshuffles a shuffled stream
            self.source.records.set_epoch(int(epoch))

    def __iter__(self):
        for position, record in enumerate(self.source.records):
            try:
                sample = self.source.decode(record)
            except Exception as error:
                raise SampleError(f"example {position} of this worker's shards of {self.info.name}: "
                                  f"{type(error).__name__}: {error}") from error  # fmt: skip
            if self.augmentation is None:
                yield evaluation_example(sample, self.info)
                continue
            key = int.from_bytes(hashlib.blake2b(sample.image.tobytes(), digest_size=8).digest(), "little")
            yield training_example(sample, self.augmentation, sample_rng(self.seed, self.epoch, key))


def collate_eval(examples: Sequence[dict[str, Any]]) -> dict[str, list]:
    """Evaluation examples have different sizes: keep every key as a list."""
    return {key: [example[key] for example in examples] for key in examples[0]}


class EpochCallback(TrainerCallback):
    """Sets the training data set's epoch at the start of every `Trainer` epoch (also right after resuming), so its
    augmentation draws follow (seed, epoch, index)."""

    def __init__(self, dataset: TrainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor(state.epoch + 1e-6))


def detect_format(root: str | os.PathLike, task: str | None = None) -> str:
    """Which layout `root` holds: one of `FORMATS` (`task` picks COCO panoptic vs instance when both exist)."""
    root = Path(root)
    found = []
    if list(root.glob("annotations/panoptic_*.json")):
        found.append("coco_panoptic")
    if list(root.glob("annotations/instances_*.json")):
        found.append("coco_instance")
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        found.append("ade20k")
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        found.append("cityscapes")
    if (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file():
        found.append("hf_disk")
    if task is not None:
        wanted = {"panoptic": ["coco_panoptic", "hf_disk"], "instance": ["coco_instance", "hf_disk"],
                  "semantic": ["ade20k", "cityscapes", "hf_disk"]}[task]  # fmt: skip
        found = [f for f in found if f in wanted]
    if not found:
        raise ValueError(
            f"{root} holds no known layout{f' for task {task!r}' if task else ''}: expected COCO "
            "(annotations/panoptic_*.json or instances_*.json), ADE20K (images/, annotations/), Cityscapes "
            "(leftImg8bit/, gtFine/) or a datasets save_to_disk folder"
        )
    return found[0]


def load_source(
    root: str | os.PathLike, split: str, format: str | None = None, task: str | None = None, **hub_kwargs: Any
) -> SegmentationSource:
    """A source for `split` of the data set at `root`, its layout detected unless `format` is given. For a
    `save_to_disk` folder (`"hf_disk"`) or a data set by name (`"hub"`, `root` a `datasets.load_dataset` name or
    folder), `hub_kwargs` go to `hub.load_hub_source` (column names, `id2label`, ...)."""
    if format != "hub" and not Path(root).is_dir():  # a data set by name need not be a folder
        raise FileNotFoundError(f"{root}: no such data set folder")
    format = format or detect_format(root, task)
    if format == "coco_panoptic":
        return load_coco_panoptic(root, split)
    if format == "coco_instance":
        return load_coco_instance(root, split)
    if format == "ade20k":
        return load_ade20k(root, split, hub_kwargs.get("id2label"))
    if format == "cityscapes":
        return load_cityscapes(root, split)
    if format in ("hf_disk", "hub"):
        from .hub import load_hub_source

        return load_hub_source(root, split, task=task, **hub_kwargs)
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")


def _is_stream(source: SegmentationSource) -> bool:
    return isinstance(source.records, datasets.IterableDataset)


VALIDATION_MODES = ("fast", "full", "skip")


def _as_source(
    data: SegmentationSource | str | os.PathLike, split: str, format: str | None, task: str | None,
    validate: bool | str, **hub_kwargs: Any,
) -> SegmentationSource:  # fmt: skip
    mode = {True: "fast", False: "skip"}.get(validate, validate)
    if mode not in VALIDATION_MODES:
        raise ValueError(f"validate must be True, False or one of {VALIDATION_MODES}, got {validate!r}")
    source = data if isinstance(data, SegmentationSource) else load_source(data, split, format, task, **hub_kwargs)
    if mode != "skip" and not _is_stream(source):  # a stream is checked as it is read
        from .validation import validate_dataset

        validate_dataset(source, decode=mode == "full")
    return source


def make_train_dataset(
    data: SegmentationSource | str | os.PathLike,
    split: str = "train",
    *,
    input_size: int | tuple[int, int] = 640,
    seed: int = 0,
    augmentation: AugmentationConfig | None = None,
    format: str | None = None,
    task: str | None = None,
    validate: bool | str = True,
) -> TrainDataset | StreamingDataset:
    """The training data set of a source or a data set folder (a `StreamingDataset` for a streamed source).
    `augmentation` defaults to the authors' recipe for the task (`recipe_augmentation`); `validate` runs the
    validation pass first and raises on problems (True or `"fast"`: `validate_dataset`; `"full"`: with
    `decode=True`; False or `"skip"`: none)."""
    source = _as_source(data, split, format, task, validate)
    augmentation = augmentation or recipe_augmentation(source.info.task, input_size)
    if _is_stream(source):
        return StreamingDataset(source, augmentation, seed=seed)
    return TrainDataset(source, augmentation, seed=seed)


def make_eval_dataset(
    data: SegmentationSource | str | os.PathLike,
    split: str = "val",
    *,
    format: str | None = None,
    task: str | None = None,
    validate: bool | str = True,
    **hub_kwargs: Any,
) -> EvalDataset | StreamingDataset:
    """The evaluation data set of a source or a data set folder (see `make_train_dataset`; `hub_kwargs` as in
    `load_source`)."""
    source = _as_source(data, split, format, task, validate, **hub_kwargs)
    return StreamingDataset(source) if _is_stream(source) else EvalDataset(source)
