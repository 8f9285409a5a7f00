"""Any `datasets` data set (Hub or local) given the names of its image and annotation columns.

Three annotation kinds:
- `"semantic"`: a class-index map per row (`annotation_column`, an image or a 2-D array); with `reduce_labels`
  value 0 is unlabelled and values 1..K become classes 0..K-1 (the ADE20K convention);
- `"instance"`: an instance-id map per row plus `mapping_column`, the class of each instance id (a dict, a list of
  `{"id", "label_id" | "category_id"}` or a list of `[id, class]` pairs); id `void_id` is background;
- `"panoptic"`: a panoptic PNG (RGB ids, or a 2-D id map) plus `segments_info_column`
  (`[{"id", "category_id", "iscrowd"?}]`); `category_to_label` maps category ids to contiguous labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from image_processing.targets import instance_target, panoptic_target, rgb_to_id, semantic_target

from .base import DatasetInfo, Sample, SegmentationSource

KINDS = ("semantic", "instance", "panoptic")


def instance_mapping(value: Any) -> dict[int, int]:
    """Instance id -> class from a dict, a list of `{"id", "label_id" | "category_id"}` or a list of pairs."""
    if isinstance(value, Mapping):
        return {int(k): int(v) for k, v in value.items() if v is not None}  # Arrow structs fill absent keys with None
    mapping = {}
    for item in value or []:
        if isinstance(item, Mapping):
            label = item.get("label_id", item.get("category_id"))
            if "id" not in item or label is None:
                raise ValueError(
                    f"instance mapping entries need 'id' and 'label_id' (or 'category_id'), got {dict(item)}"
                )
            mapping[int(item["id"])] = int(label)
        else:
            instance_id, label = item
            mapping[int(instance_id)] = int(label)
    return mapping


@dataclass(kw_only=True)
class HubSource(SegmentationSource):
    """A `datasets.Dataset` whose rows hold an image and its annotation; see the module docstring for the kinds."""

    kind: str
    image_column: str
    annotation_column: str
    extra_column: str | None = None  # segments_info (panoptic) or the instance mapping (instance)
    category_to_label: dict[int, int] | None = None
    reduce_labels: bool = False
    void_id: int = 0

    def decode(self, record: dict[str, Any]) -> Sample:
        image = record[self.image_column]
        image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)  # PIL image or array
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"column {self.image_column!r} must hold RGB uint8 images, got {image.dtype} {image.shape}"
            )
        annotation = np.asarray(record[self.annotation_column])
        if tuple(annotation.shape[:2]) != tuple(image.shape[:2]):
            raise ValueError(
                f"column {self.annotation_column!r} is {annotation.shape[:2]} but the image is {image.shape[:2]}"
            )
        name = f"column {self.annotation_column!r}"
        num_labels, ignore = self.info.num_labels, self.info.ignore_index
        if self.kind == "semantic":
            classes = annotation.astype(np.int64)
            if self.reduce_labels:
                classes = np.where(classes == 0, ignore, classes - 1)
            target = semantic_target(classes, ignore, num_labels, source=name)
        elif self.kind == "instance":
            target = instance_target(annotation.astype(np.int64), instance_mapping(record[self.extra_column]),
                                     ignore_index=self.void_id, num_labels=num_labels, source=name)  # fmt: skip
        else:
            ids = rgb_to_id(annotation) if annotation.ndim == 3 else annotation.astype(np.int64)
            target = panoptic_target(ids, record[self.extra_column], self.category_to_label, source=name)
        file_name = getattr(record[self.image_column], "filename", "") or ""
        return Sample(image, target, record.get("image_id", file_name), file_name)


def _names_from_features(dataset: datasets.Dataset, column: str | None) -> dict[int, str] | None:
    """Class names from a `ClassLabel` feature of `column` or of its `category_id` / `label_id` field."""
    if column is None or not dataset.features or column not in dataset.features:
        return None
    feature = dataset.features[column]
    while feature is not None and not isinstance(feature, datasets.ClassLabel):
        if isinstance(feature, list):
            feature = feature[0]
        elif isinstance(feature, dict):
            feature = feature.get("category_id", feature.get("label_id"))
        else:
            feature = getattr(feature, "feature", None)  # List / Sequence
    return dict(enumerate(feature.names)) if isinstance(feature, datasets.ClassLabel) else None


def from_hf_dataset(
    dataset: datasets.Dataset,
    kind: str,
    *,
    image_column: str = "image",
    annotation_column: str = "annotation",
    segments_info_column: str | None = None,
    mapping_column: str | None = None,
    id2label: Mapping[int, str] | None = None,
    thing_ids: Sequence[int] | None = None,
    category_to_label: Mapping[int, int] | None = None,
    reduce_labels: bool = False,
    ignore_index: int = 255,
    void_id: int = 0,
    name: str | None = None,
) -> HubSource:
    """Wrap a `datasets.Dataset` (e.g. `datasets.load_dataset(...)["train"]` or `load_from_disk`) as a source; a
    `datasets.IterableDataset` (`streaming=True`) gives a source for `StreamingDataset` (no length, no indexing).

    `id2label` (contiguous class index -> name) is required unless a `ClassLabel` feature names the classes.
    `thing_ids` defaults to all classes for `"instance"` and to none otherwise (give it for panoptic PQ splits).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    extra_column = {"panoptic": segments_info_column, "instance": mapping_column}.get(kind)
    if kind != "semantic" and extra_column is None:
        needed = "segments_info_column" if kind == "panoptic" else "mapping_column"
        raise ValueError(f"a {kind} data set needs {needed}")
    columns = dataset.column_names or []  # a stream may not know its columns before it is read
    missing = [
        c for c in (image_column, annotation_column, extra_column) if c is not None and columns and c not in columns
    ]
    if missing:
        raise ValueError(f"columns {missing} are not in the data set; it has {dataset.column_names}")
    if id2label is None:
        id2label = _names_from_features(dataset, extra_column if kind != "semantic" else annotation_column)
        if id2label is None:
            raise ValueError("give id2label (class index -> name): no ClassLabel feature names the classes")
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if category_to_label is not None:
        category_to_label = {int(k): int(v) for k, v in category_to_label.items()}
        bad = sorted({v for v in category_to_label.values() if v not in id2label})
        if bad:
            raise ValueError(f"category_to_label maps to labels {bad[:10]} that id2label does not name")
    if thing_ids is None:
        thing_ids = tuple(id2label) if kind == "instance" else ()
    info = DatasetInfo(
        name=name or f"{kind} data set ({type(dataset).__name__})", task=kind, id2label=id2label,
        thing_ids=tuple(int(i) for i in thing_ids), ignore_index=ignore_index,
    )  # fmt: skip
    return HubSource(
        records=dataset, info=info, kind=kind, image_column=image_column, annotation_column=annotation_column,
        extra_column=extra_column, category_to_label=category_to_label, reduce_labels=reduce_labels, void_id=void_id,
    )  # fmt: skip
