"""Semantic segmentation readers: images paired with single-channel label PNGs (ADE20K, Cityscapes, any folder pair).

Every raw label value is mapped through a table: listed values become contiguous classes `0 .. K-1`, values in
`ignored_values` become `ignore_index` (255), and any other value is an error naming the file (a wrong data set or
a corrupt label, never silently ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from image_processing.targets import semantic_target
from modeling_eomt.labels import ADE20K_CLASSES, CITYSCAPES_CLASSES

from .base import DatasetInfo, FileCheck, Sample, SegmentationSource, check_same_size, read_label_png

# Cityscapes label ids (the `*_gtFine_labelIds.png` values 0..33) -> the 19 train ids evaluated; all others ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15,
    31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_THING_IDS = tuple(range(11, 19))  # person .. bicycle (the classes with instances)
CITYSCAPES_NUM_LABEL_IDS = 34


def label_lookup(label_map: Mapping[int, int], ignored_values: Iterable[int], ignore_index: int) -> np.ndarray:
    """Table raw value -> class index, `ignore_index` for ignored values, -1 for values that must not occur."""
    ignored_values = list(ignored_values)
    lookup = np.full(max([*label_map, *ignored_values, 0]) + 1, -1, dtype=np.int64)
    lookup[ignored_values] = ignore_index
    lookup[list(label_map)] = list(label_map.values())
    return lookup


@dataclass(kw_only=True)
class SemanticSource(SegmentationSource):
    """Semantic records: `image_id` (the relative name), `image_file` and `annotation_file`."""

    file_columns = ("image_file", "annotation_file")

    lookup: np.ndarray

    def decode(self, record: dict[str, Any]) -> Sample:
        image = self.read_image(record["image_file"])
        raw = read_label_png(record["annotation_file"]).astype(np.int64)
        check_same_size(image, raw, record["annotation_file"])
        values = np.unique(raw)
        invalid = [int(v) for v in values if v >= len(self.lookup) or self.lookup[v] < 0]
        if invalid:
            raise ValueError(
                f"{record['annotation_file']} holds label values {invalid[:10]} that this data set does not define"
            )
        classes = self.lookup[raw]
        target = semantic_target(
            classes, self.info.ignore_index, self.info.num_labels, source=record["annotation_file"]
        )
        return Sample(image, target, record["image_id"], record["image_file"])

    def files(self, record: dict[str, Any]) -> list[FileCheck]:
        return [FileCheck(record["image_file"], "image"), FileCheck(record["annotation_file"], "annotation")]


def _files_by_key(folder: Path, suffix: str) -> dict[str, Path]:
    """Files under `folder` (recursively) ending with `suffix`, keyed by relative path minus the suffix."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                path = Path(directory) / name
                found[str(path.relative_to(folder))[: -len(suffix)]] = path
    return found


def load_semantic_folder(
    images_dir: str | os.PathLike,
    annotations_dir: str | os.PathLike,
    id2label: Mapping[int, str],
    *,
    label_map: Mapping[int, int] | None = None,
    ignored_values: Iterable[int] | None = None,
    image_suffix: str = ".jpg",
    annotation_suffix: str = ".png",
    ignore_index: int = 255,
    thing_ids: tuple[int, ...] = (),
    name: str | None = None,
) -> SemanticSource:
    """Pair `images_dir/REL{image_suffix}` with `annotations_dir/REL{annotation_suffix}` (recursively).

    `label_map` maps raw PNG values to class indices (identity on `0 .. K-1` when None); `ignored_values` are raw
    values meaning "unlabelled" (`{ignore_index}` when None). A file without partner is kept as a record (with the
    partner's expected path), so the validation pass and decoding report the missing file.
    """
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"no folder {folder}")
    id2label = {int(k): str(v) for k, v in id2label.items()}
    label_map = {int(k): int(v) for k, v in (label_map if label_map is not None else {i: i for i in id2label}).items()}
    bad = sorted({v for v in label_map.values() if v not in id2label})
    if bad:
        raise ValueError(f"label_map maps to class indices {bad[:10]} that id2label does not name")
    lookup = label_lookup(label_map, ignored_values if ignored_values is not None else [ignore_index], ignore_index)

    images, annotations = _files_by_key(images_dir, image_suffix), _files_by_key(annotations_dir, annotation_suffix)
    keys = sorted(set(images) | set(annotations))
    columns = {  # a file without partner gets the partner's expected path: validation and decoding report it missing
        "image_id": keys,
        "image_file": [str(images.get(k, images_dir / (k + image_suffix))) for k in keys],
        "annotation_file": [str(annotations.get(k, annotations_dir / (k + annotation_suffix))) for k in keys],
    }
    info = DatasetInfo(name=name or f"semantic folders {images_dir}", task="semantic", id2label=id2label,
                       thing_ids=thing_ids, ignore_index=ignore_index)  # fmt: skip
    features = datasets.Features({key: datasets.Value("string") for key in columns})
    return SemanticSource(records=datasets.Dataset.from_dict(columns, features=features), info=info, lookup=lookup)


_ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def load_ade20k(
    root: str | os.PathLike, split: str = "train", id2label: Mapping[int, str] | None = None
) -> SemanticSource:
    """ADE20K (SceneParsing, `ADEChallengeData2016`): `images/{training,validation}/*.jpg` with
    `annotations/{training,validation}/*.png`; PNG value 0 is unlabelled and values 1..K become classes 0..K-1
    (K = 150 with the ADE20K names unless `id2label` is given)."""
    if split not in _ADE20K_SPLITS:
        raise ValueError(f"ADE20K split must be one of {sorted(_ADE20K_SPLITS)}, got {split!r}")
    root, folder = Path(root), _ADE20K_SPLITS[split]
    id2label = dict(enumerate(ADE20K_CLASSES)) if id2label is None else dict(id2label)
    return load_semantic_folder(
        root / "images" / folder, root / "annotations" / folder, id2label,
        label_map={i + 1: i for i in id2label}, ignored_values=[0], name=f"ADE20K {folder} ({root})",
    )  # fmt: skip


def load_cityscapes(root: str | os.PathLike, split: str = "train") -> SemanticSource:
    """Cityscapes fine annotations: `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with
    `gtFine/{split}/{city}/*_gtFine_labelIds.png`; label ids become the 19 train ids, every other id (0..33) is
    ignored."""
    root = Path(root)
    ignored = [i for i in range(CITYSCAPES_NUM_LABEL_IDS) if i not in CITYSCAPES_LABEL_TO_TRAIN_ID]
    return load_semantic_folder(
        root / "leftImg8bit" / split, root / "gtFine" / split, dict(enumerate(CITYSCAPES_CLASSES)),
        label_map=CITYSCAPES_LABEL_TO_TRAIN_ID, ignored_values=ignored, image_suffix="_leftImg8bit.png",
        annotation_suffix="_gtFine_labelIds.png", thing_ids=CITYSCAPES_THING_IDS, name=f"Cityscapes {split} ({root})",
    )  # fmt: skip
