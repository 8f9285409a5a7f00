"""What every reader provides: `DatasetInfo` (task and labels), `Sample` (the canonical decoded example) and
`SegmentationSource`, a map-style dataset that decodes samples lazily from a `datasets.Dataset` of records.

A source's records are light (file paths and annotations, or the rows of a Hub data set); `source[i]` decodes
record `i` into a `Sample`. Sources pickle cheaply, so they work in `DataLoader` worker processes. Any error while
decoding is re-raised as `SampleError` naming the record's files.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
from PIL import Image

from image_processing.targets import MaskTarget

TASKS = ("panoptic", "instance", "semantic")


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata a data set gives the model, the metrics and the trainer.

    Args:
        name: shown in messages and reports.
        task: `"panoptic"`, `"instance"` or `"semantic"`.
        id2label: contiguous class index (`0 .. num_labels - 1`) to class name.
        thing_ids: the class indices that are countable things (PQ splits its averages by them); all others are stuff.
        ignore_index: value of unlabelled pixels in semantic maps.
        category_ids: the data set's own category id of each class index (e.g. COCO's 1, 2, 4, ...), when its
            annotations use other ids than the class indices; stored in the model config for `eomt predict`.
    """

    name: str
    task: str
    id2label: dict[int, str]
    thing_ids: tuple[int, ...] = ()
    ignore_index: int = 255
    category_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(
                f"{self.name}: id2label keys must be 0 .. num_labels - 1, got {sorted(self.id2label)[:10]}..."
            )
        unknown = sorted(set(self.thing_ids) - set(self.id2label))
        if unknown:
            raise ValueError(f"{self.name}: thing_ids {unknown} are not class indices of id2label")
        if self.ignore_index in self.id2label:
            raise ValueError(f"{self.name}: ignore_index {self.ignore_index} is also a class index")
        if self.category_ids is not None and len(set(self.category_ids)) != len(self.id2label):
            raise ValueError(f"{self.name}: category_ids {list(self.category_ids)[:10]} must give one distinct id per "
                             f"class ({len(self.id2label)} classes)")  # fmt: skip

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in self.id2label.items()}

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(index for index in sorted(self.id2label) if index not in self.thing_ids)


@dataclass
class Sample:
    """One decoded example: `image` `(H, W, 3)` uint8 and its `target` at the same resolution (contiguous labels,
    crowd segments kept); `image_id` and `file_name` identify it in results and messages; `notes` say what the reader
    noticed without it being an error (reported by the validation pass)."""

    image: np.ndarray
    target: MaskTarget
    image_id: int | str
    file_name: str
    notes: list[str] = field(default_factory=list)


class SampleError(RuntimeError):
    """Decoding one sample failed; the message names its files and the problem."""


@dataclass(frozen=True)
class FileCheck:
    """A file a record needs, for the validation pass: its path, its role (`"image"`, `"annotation"`) and the size
    `(height, width)` it must have (None when unknown)."""

    path: str
    role: str
    size: tuple[int, int] | None = None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as `(H, W, 3)` uint8 (grey, palette and CMYK images are converted; EXIF orientation is not
    applied, as annotations refer to the stored pixels)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def stream_rgb(path: str | Path) -> np.ndarray:
    """What `read_rgb` would find wrong with an image file, at a fraction of its cost: every byte of the file goes
    through the decoder (JPEGs at 1/8 scale, which reads all their compressed data), and a read-only blank
    `(H, W, 3)` uint8 array of the image's size stands in for the pixels."""
    with Image.open(path) as image:
        width, height = image.size
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        image.load()
        image.convert("RGB")
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel label PNG (mode L, P, I or I;16) as `(H, W)` integers (palette indices, not colours)."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"a label map must be a single-channel PNG, got mode {image.mode}")
        return np.asarray(image)


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: str) -> None:
    if tuple(image.shape[:2]) != tuple(label.shape[:2]):
        raise ValueError(
            f"{label_path} is {label.shape[0]}x{label.shape[1]} but its image is {image.shape[0]}x{image.shape[1]}"
        )


@dataclass(kw_only=True)
class SegmentationSource(torch.utils.data.Dataset):
    """Map-style data set of `Sample`s over `records` (a `datasets.Dataset`). Subclasses implement `decode`, `files`
    (what the validation pass checks) and may fill `annotation_problems` (what is wrong in the annotation files,
    found while loading them) and `warnings` (what was left out, e.g. images without annotation)."""

    file_columns: ClassVar[tuple[str, ...]] = ()  # the record columns `files` reads
    streams_images: ClassVar[bool] = False  # `read_image` only streams images through the decoder (`verifying`)

    records: datasets.Dataset
    info: DatasetInfo
    annotation_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} records")
        record = None
        try:
            record = self.records[index]  # Hub data sets decode their image columns here
            return self.decode(record)
        except SampleError:
            raise
        except Exception as error:  # name the files; keep the original as the cause
            raise SampleError(f"{self.describe(index, record)}: {type(error).__name__}: {error}") from error

    def decode(self, record: dict[str, Any]) -> Sample:
        raise NotImplementedError

    def read_image(self, path: str | Path) -> np.ndarray:
        """The image file at `path` as `(H, W, 3)` uint8 (`read_rgb`); a blank stand-in after checking the file
        (`stream_rgb`) in the copy `verifying` returns."""
        return stream_rgb(path) if self.streams_images else read_rgb(path)

    def verifying(self) -> SegmentationSource:
        """A copy of this source for the validation pass: records read as `source[i]` reads them, images only streamed
        through the decoder (`read_image`); label maps, annotations and targets as in training."""
        verifier = copy.copy(self)
        verifier.streams_images = True
        return verifier

    def files(self, record: dict[str, Any]) -> list[FileCheck]:
        """The files of one record, for the validation pass."""
        return []

    def describe(self, index: int, record: dict[str, Any] | None) -> str:
        """How messages name a record: its files (or its row)."""
        files = ", ".join(check.path for check in self.files(record)) if record is not None else ""
        return files or f"row {index} of {self.info.name}"

    def training_segment_counts(self) -> np.ndarray | None:
        """Non-crowd segments per record when the annotations tell without decoding (None otherwise); the training
        data set leaves out records with none, as they give no training signal."""
        return None

    def select(self, indices: Sequence[int]) -> SegmentationSource:
        """The same source restricted to `indices` (records are not copied)."""
        selected = copy.copy(self)
        selected.records = self.records.select(indices)
        return selected
