"""Any `datasets` data set (Hub or local) given the names of its image and annotation columns.

Three annotation kinds:
- `"semantic"`: a class-index map per row (`annotation_column`, an image or a 2-D array); with `reduce_labels`
  value 0 is unlabelled and values 1..K become classes 0..K-1 (the ADE20K convention);
- `"instance"`: an instance-id map per row plus `mapping_column`, the class of each instance id (a dict, a list of
  `{"id", "label_id" | "category_id"}` or a list of `[id, class]` pairs); id `void_id` is background;
- `"panoptic"`: a panoptic PNG (RGB ids, or a 2-D id map) plus `segments_info_column`
  (`[{"id", "category_id", "iscrowd"?}]`); `category_to_label` maps category ids to contiguous labels.

The class ids in the annotations are the data set's category ids: contiguous `0..K-1` (a `ClassLabel`, or an
`id2label` keyed so), or any others (an `id2label` keyed by them, e.g. COCO's 1, 2, 4, ..., which become classes
`0..K-1` in id order and are kept as `DatasetInfo.category_ids`). `load_hub_source` opens a data set by name or path
(`datasets.load_dataset`: Hub names, local folders of data files; `save_to_disk` folders) and finds its split and
columns; `parse_id2label` reads the class names given on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import json
import os
from pathlib import Path

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
            elif self.category_to_label is not None:  # the data set's ids -> classes; any other value is unlabelled
                ids = np.array(sorted(self.category_to_label), dtype=np.int64)
                position = np.clip(np.searchsorted(ids, classes), 0, len(ids) - 1)
                labels = np.array([self.category_to_label[i] for i in ids.tolist()], dtype=np.int64)
                classes = np.where(ids[position] == classes, labels[position], ignore)
            target = semantic_target(classes, ignore, num_labels, source=name)
        elif self.kind == "instance":
            mapping = instance_mapping(record[self.extra_column])
            if self.category_to_label is not None:
                unknown = sorted({c for c in mapping.values() if c not in self.category_to_label})
                if unknown:
                    raise ValueError(f"column {self.extra_column!r} has category ids {unknown[:10]} that id2label does "
                                     "not name")  # fmt: skip
                mapping = {key: self.category_to_label[value] for key, value in mapping.items()}
            target = instance_target(annotation.astype(np.int64), mapping,
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
    if category_to_label is None and sorted(id2label) != list(range(len(id2label))):  # keyed by the data set's ids
        category_to_label = {category: label for label, category in enumerate(sorted(id2label))}
        if thing_ids is not None:
            thing_ids = [category_to_label[category] for category in thing_ids if category in category_to_label]
        id2label = {label: id2label[category] for category, label in category_to_label.items()}
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
        category_ids=None if category_to_label is None else _category_ids(category_to_label, len(id2label)),
    )  # fmt: skip
    return HubSource(
        records=dataset, info=info, kind=kind, image_column=image_column, annotation_column=annotation_column,
        extra_column=extra_column, category_to_label=category_to_label, reduce_labels=reduce_labels, void_id=void_id,
    )  # fmt: skip


def _category_ids(category_to_label: Mapping[int, int], num_labels: int) -> tuple[int, ...] | None:
    """The category id of each class when `category_to_label` names every class once (else None: ids are ambiguous)."""
    by_label = {label: category for category, label in category_to_label.items()}
    if sorted(by_label) != list(range(num_labels)) or len(by_label) != len(category_to_label):
        return None
    return tuple(by_label[label] for label in range(num_labels))


# ----------------------------------------------------------------------------------------------------------------------
# Data sets by name or path
# ----------------------------------------------------------------------------------------------------------------------

# Names the same split goes by in different data sets.
SPLIT_ALIASES = (("val", "validation", "valid", "dev"), ("test", "testing"), ("train", "training"))
# Column names tried, in order, when none is given.
ANNOTATION_COLUMNS = ("annotation", "label", "segmentation", "semantic_map", "panoptic", "mask", "label_map", "gtFine")
SEGMENTS_COLUMNS = ("segments_info", "segments", "objects")
MAPPING_COLUMNS = ("instance_classes", "classes", "instances", "segments_info")


def pick_split(available: Sequence[str], split: str, source: str) -> str:
    """`split`, or the name its data set gives it (`val` / `validation`, ...)."""
    if split in available:
        return split
    for aliases in SPLIT_ALIASES:
        if split in aliases:
            for alias in aliases:
                if alias in available:
                    return alias
    raise ValueError(f"{source} has splits {list(available)}, not {split!r}")


def is_save_to_disk_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _first_column(columns: Sequence[str], candidates: Sequence[str], what: str, option: str, source: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{source}: no {what} column among {list(columns)}; name it with {option}")


def load_hub_source(
    name_or_path: str | os.PathLike,
    split: str,
    *,
    task: str | None = None,
    kind: str | None = None,
    config_name: str | None = None,
    image_column: str = "image",
    annotation_column: str | None = None,
    segments_info_column: str | None = None,
    mapping_column: str | None = None,
    **options: Any,
) -> HubSource:
    """`split` (or its alias, see `pick_split`) of a `datasets` data set: a `save_to_disk` folder, or anything
    `datasets.load_dataset` opens (a Hub name, a local folder of data files; `config_name` its configuration).

    `task` (alias `kind`): `"semantic"`, `"instance"` or `"panoptic"`; by default panoptic when a segments column is
    found, else semantic. Columns not given are looked for under their usual names (`ANNOTATION_COLUMNS`, ...);
    `options` go to `from_hf_dataset` (`id2label`, `thing_ids`, `reduce_labels`, ...)."""
    source = str(name_or_path)
    if is_save_to_disk_folder(name_or_path):
        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded[pick_split(list(loaded), split, source)]
    else:
        try:
            splits = datasets.get_dataset_split_names(source, config_name)
            loaded = datasets.load_dataset(source, config_name, split=pick_split(splits, split, source))
        except (FileNotFoundError, ConnectionError) as error:
            raise ValueError(f"{source}: not a data set folder and could not be loaded with datasets.load_dataset "
                             f"({type(error).__name__}: {error})") from error  # fmt: skip
    columns = loaded.column_names or []
    kind = task or kind
    if kind is None:
        kind = "panoptic" if segments_info_column or any(c in columns for c in SEGMENTS_COLUMNS) else "semantic"
    annotation_column = annotation_column or _first_column(columns, ANNOTATION_COLUMNS, "annotation", "--annotation-column", source)
    if kind == "panoptic":
        segments_info_column = segments_info_column or _first_column(columns, SEGMENTS_COLUMNS, "segments_info", "--segments-info-column", source)
    if kind == "instance":
        mapping_column = mapping_column or segments_info_column or _first_column(
            columns, MAPPING_COLUMNS, "instance classes", "--segments-info-column", source
        )  # fmt: skip
    return from_hf_dataset(
        loaded, kind, image_column=image_column, annotation_column=annotation_column,
        segments_info_column=segments_info_column, mapping_column=mapping_column, name=source, **options,
    )  # fmt: skip


def parse_id2label(text: str) -> tuple[dict[int, str], list[int] | None]:
    """Class names given as inline JSON or a JSON file: `{"id": "name", ...}` (ids: the data set's, or 0..K-1), or COCO
    categories (`[{"id", "name", "isthing"?}, ...]`, or a COCO annotation file holding them under "categories").
    Returns `id2label` and the ids that are things (None when not said)."""
    inline = text.lstrip().startswith(("{", "["))
    if not inline and not Path(text).is_file():
        raise ValueError(f"--id2label {text!r}: no such file, and not inline JSON")
    try:
        value = json.loads(text if inline else Path(text).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"--id2label: not valid JSON ({error}): {text[:80]!r}") from None
    if isinstance(value, dict) and isinstance(value.get("categories"), list):
        value = value["categories"]
    if isinstance(value, list):
        if not all(isinstance(item, dict) and "id" in item and "name" in item for item in value):
            raise ValueError("--id2label: a list must hold COCO categories {\"id\", \"name\", \"isthing\"?}")
        id2label = {int(item["id"]): str(item["name"]) for item in value}
        things = [int(item["id"]) for item in value if item.get("isthing")] if any("isthing" in item for item in value) else None
        return id2label, things
    if isinstance(value, dict):
        try:
            return {int(key): str(name) for key, name in value.items()}, None
        except ValueError:
            raise ValueError(f"--id2label: keys must be integer class or category ids, got {list(value)[:5]}") from None
    raise ValueError(f"--id2label: expected a JSON object or a list of categories, got {type(value).__name__}")
