"""COCO panoptic and COCO instance readers (the official folder layout).

COCO panoptic: `{root}/{split}/*.jpg` (or `{split}2017`), `{root}/annotations/panoptic_{split}.json` and
`{root}/annotations/panoptic_{split}/*.png` (segment ids as `R + 256 G + 256^2 B`). COCO instance:
`{root}/{split}/*.jpg` and `{root}/annotations/instances_{split}.json` (polygons, RLE, and uncompressed RLE for
crowds, decoded with pycocotools; overlapping instances stay separate masks). Category ids (COCO's 1..200 with
gaps) become contiguous labels in sorted id order, as the authors map them (133 panoptic / 80 instance classes).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from pycocotools import mask as mask_utils

from image_processing.targets import MaskTarget, panoptic_target, rgb_to_id

from .base import DatasetInfo, FileCheck, Sample, SegmentationSource, check_same_size, read_rgb

logger = logging.getLogger(__name__)
# pycocotools' mask decoding trips a harmless numpy 2 deprecation (its array wrapper lacks `copy=`) on every call
warnings.filterwarnings(
    "ignore",
    message="__array__ implementation doesn't accept a copy",
    category=DeprecationWarning,
    module="pycocotools",
)

_SEGMENT = {"id": datasets.Value("int64"), "category_id": datasets.Value("int64"), "iscrowd": datasets.Value("bool")}
_ANNOTATION = {**_SEGMENT, "segmentation": datasets.Value("string")}


def split_candidates(split: str) -> list[str]:
    """Folder/file stems a split may have: `val` -> `val`, `val2017`."""
    return [split] if split.endswith("2017") else [split, f"{split}2017"]


def first_existing(candidates: list[Path], what: str) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no {what} found; looked for " + ", ".join(str(c) for c in candidates))


def _path(given: str | os.PathLike | None, candidates: list[Path], what: str) -> Path:
    """`given`, or the first of the official layout's `candidates` that exists."""
    return Path(given) if given else first_existing(candidates, what)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise ValueError(f"{path}: expected a list under {key!r}, got {type(document.get(key)).__name__}")
    return document


def contiguous_categories(
    categories: list[dict], source: Path, need_isthing: bool
) -> tuple[dict[int, int], dict[int, str], tuple[int, ...]]:
    """`category_to_label` (sorted ids -> 0..K-1), `id2label` and the labels that are things."""
    ids = [category.get("id") for category in categories]
    if any(not isinstance(i, int) for i in ids):
        raise ValueError(f"{source}: every category needs an integer 'id', got {ids[:10]}")
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"{source}: category ids {duplicates} are listed more than once")
    if need_isthing and any("isthing" not in category for category in categories):
        missing = [category["id"] for category in categories if "isthing" not in category]
        raise ValueError(f"{source}: panoptic categories need 'isthing'; categories {missing[:10]} have none")
    ordered = sorted(categories, key=lambda category: category["id"])
    category_to_label = {category["id"]: label for label, category in enumerate(ordered)}
    id2label = {label: str(category.get("name", category["id"])) for label, category in enumerate(ordered)}
    thing_ids = tuple(label for label, category in enumerate(ordered) if category.get("isthing", 1))
    return category_to_label, id2label, thing_ids


def _images_by_id(images: list[dict], source: Path) -> tuple[dict[Any, dict], list[str], set]:
    """The JSON's `images` by id, the problems of ids used by more than one image (their annotations cannot be told
    apart), and those ids."""
    by_id: dict[Any, list[dict]] = {}
    for image in images:
        by_id.setdefault(image.get("id"), []).append(image)
    shared = {image_id: same for image_id, same in by_id.items() if len(same) > 1}
    problems = []
    for image_id, same in shared.items():
        names = ", ".join(str(image.get("file_name")) for image in same[:3])
        problems.append(f"{source}: {len(same)} entries of 'images' have the id {image_id!r} ({names}); image ids "
                        "must be unique")  # fmt: skip
    return {image_id: same[0] for image_id, same in by_id.items()}, problems, set(shared)


def _image_id_column(values: list[Any]) -> tuple[list[Any], datasets.Value]:
    """Image ids and their column type: integers stay integers, anything else becomes a string."""
    if all(isinstance(v, int) for v in values):
        return values, datasets.Value("int64")
    return [str(v) for v in values], datasets.Value("string")


@dataclass(kw_only=True)
class CocoPanopticSource(SegmentationSource):
    """COCO panoptic records: `image_id`, `image_file`, `annotation_file` (the PNG), `height`, `width` (-1 when the
    JSON does not say) and `segments` (`[{"id", "category_id", "iscrowd"}]`, dataset category ids)."""

    file_columns = ("image_id", "image_file", "annotation_file", "height", "width")

    category_to_label: dict[int, int]

    def decode(self, record: dict[str, Any]) -> Sample:
        if not record["image_file"]:
            raise ValueError(f"annotation for image_id {record['image_id']} has no entry in the JSON's 'images'")
        image = self.read_image(record["image_file"])
        segment_ids = rgb_to_id(read_rgb(record["annotation_file"]))
        check_same_size(image, segment_ids, record["annotation_file"])
        absent: list[int] = []
        target = panoptic_target(
            segment_ids, record["segments"], self.category_to_label, source=record["annotation_file"], absent=absent
        )
        # Kept (they have no pixels to learn or score), but reported: panopticapi counts them as missed segments.
        notes = [f"{record['annotation_file']}: segments {absent[:10]} of segments_info have no pixels in the PNG "
                 "(left out)"] if absent else []  # fmt: skip
        return Sample(image, target, record["image_id"], record["image_file"], notes)

    def files(self, record: dict[str, Any]) -> list[FileCheck]:
        size = (record["height"], record["width"]) if record["height"] > 0 else None
        checks = [FileCheck(record["image_file"], "image", size)] if record["image_file"] else []
        return checks + [FileCheck(record["annotation_file"], "annotation", size)]

    def training_segment_counts(self) -> np.ndarray:
        return np.array(
            [
                sum(not s["iscrowd"] and s["category_id"] in self.category_to_label for s in segments)
                for segments in self.records["segments"]
            ]
        )


def load_coco_panoptic(
    root: str | os.PathLike,
    split: str = "train",
    *,
    images_dir: str | os.PathLike | None = None,
    annotation_file: str | os.PathLike | None = None,
    panoptic_dir: str | os.PathLike | None = None,
) -> CocoPanopticSource:
    """Read a COCO panoptic split (`split` "train"/"val" also finds the `2017` names); the three paths override the
    official layout. Problems in the JSON are collected (see `validate_dataset`), not raised, except a JSON that
    cannot be used at all."""
    root = Path(root)
    names = split_candidates(split)
    images_dir = _path(images_dir, [root / n for n in names], f"image folder for split {split!r}")
    annotation_file = _path(
        annotation_file, [root / "annotations" / f"panoptic_{n}.json" for n in names], "panoptic JSON"
    )
    panoptic_dir = _path(panoptic_dir, [root / "annotations" / f"panoptic_{n}" for n in names], "panoptic PNG folder")
    document = _load_json(annotation_file)
    category_to_label, id2label, thing_ids = contiguous_categories(
        document["categories"], annotation_file, need_isthing=True
    )
    images, problems, shared_ids = _images_by_id(document["images"], annotation_file)

    columns: dict[str, list] = {
        k: [] for k in ("image_id", "image_file", "annotation_file", "height", "width", "segments")
    }
    annotated: dict[Any, list[str]] = {}
    for position, annotation in enumerate(document["annotations"]):
        png = panoptic_dir / str(annotation.get("file_name", f"<annotation {position} without file_name>"))
        image = images.get(annotation.get("image_id"))
        annotated.setdefault(annotation.get("image_id"), []).append(png.name)
        if image is None:
            problems.append(
                f"{annotation_file}: annotation {position} ({png.name}) has image_id "
                f"{annotation.get('image_id')!r}, which is not in 'images'"
            )
        segments = []
        for index, segment in enumerate(annotation.get("segments_info", [])):
            if "id" not in segment or "category_id" not in segment:
                problems.append(f"{png}: segments_info[{index}] needs 'id' and 'category_id', got {segment}")
                continue
            if segment["category_id"] not in category_to_label:
                problems.append(
                    f"{png}: segment {segment['id']} has category_id {segment['category_id']}, not in the "
                    f"categories of {annotation_file.name}"
                )
            segments.append(
                {
                    "id": int(segment["id"]),
                    "category_id": int(segment["category_id"]),
                    "iscrowd": bool(segment.get("iscrowd", 0)),
                }
            )
        repeated = sorted(i for i, count in Counter(s["id"] for s in segments).items() if count > 1)
        if repeated:
            problems.append(f"{png}: segment ids {repeated[:10]} are listed more than once in segments_info")
        columns["image_id"].append(annotation.get("image_id"))
        columns["image_file"].append(str(images_dir / image["file_name"]) if image and "file_name" in image else "")
        columns["annotation_file"].append(str(png))
        columns["height"].append(int(image.get("height", -1)) if image else -1)
        columns["width"].append(int(image.get("width", -1)) if image else -1)
        columns["segments"].append(segments)
    problems += [
        f"{annotation_file}: image_id {i!r} has {len(pngs)} annotations ({', '.join(pngs[:3])}); one per image"
        for i, pngs in annotated.items()
        if len(pngs) > 1 and i not in shared_ids  # shared ids are reported above
    ]
    unannotated = [image.get("file_name") for image_id, image in images.items() if image_id not in annotated]
    left_out = []
    if unannotated:
        left_out.append(f"{annotation_file}: {len(unannotated)} images have no annotation and are left out, e.g. "
                        f"{unannotated[:3]}")  # fmt: skip
        logger.warning(left_out[0])

    columns["image_id"], image_id_type = _image_id_column(columns["image_id"])
    features = datasets.Features({
        "image_id": image_id_type,
        "image_file": datasets.Value("string"), "annotation_file": datasets.Value("string"),
        "height": datasets.Value("int64"), "width": datasets.Value("int64"), "segments": [_SEGMENT],
    })  # fmt: skip
    info = DatasetInfo(name=f"COCO panoptic {split} ({root})", task="panoptic", id2label=id2label, thing_ids=thing_ids,
                       category_ids=tuple(category_to_label))  # fmt: skip
    return CocoPanopticSource(
        records=datasets.Dataset.from_dict(columns, features=features), info=info, category_to_label=category_to_label,
        annotation_problems=problems, warnings=left_out,
    )  # fmt: skip


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
    """One COCO RLE from a COCO `segmentation`: polygons `[[x0, y0, x1, y1, ...], ...]` (merged; polygons of fewer
    than 3 points enclose nothing and are skipped), uncompressed RLE (`counts` a list) or compressed RLE."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]  # 4 numbers would be read as a box
        if not polygons:
            return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ValueError(f"segmentation must be polygons or an RLE dict, got {type(segmentation).__name__}")


@dataclass(kw_only=True)
class CocoInstanceSource(SegmentationSource):
    """COCO instance records, one per image of the JSON: `image_id`, `image_file`, `height`, `width` and
    `annotations` (`[{"id", "category_id", "iscrowd", "segmentation"}]`, the segmentation as JSON text)."""

    file_columns = ("image_file", "height", "width")

    category_to_label: dict[int, int]

    def decode(self, record: dict[str, Any]) -> Sample:
        image = self.read_image(record["image_file"])
        height, width = record["height"], record["width"]
        if (height, width) != tuple(image.shape[:2]):
            raise ValueError(f"the JSON says {height}x{width} but the image is {image.shape[0]}x{image.shape[1]}")
        annotations = record["annotations"]
        unknown = [a["category_id"] for a in annotations if a["category_id"] not in self.category_to_label]
        if unknown:
            raise ValueError(f"category ids {unknown[:10]} are not in the categories")
        rles = []
        for annotation in annotations:
            try:
                rles.append(segmentation_to_rle(json.loads(annotation["segmentation"]), height, width))
            except Exception as error:
                raise ValueError(f"annotation {annotation['id']}: {error}") from error
        masks = (
            np.ascontiguousarray(np.moveaxis(mask_utils.decode(rles), -1, 0))
            if rles
            else np.zeros((0, height, width), bool)
        )
        labels = np.array([self.category_to_label[a["category_id"]] for a in annotations], np.int64)
        target = MaskTarget(masks, labels, np.array([a["iscrowd"] for a in annotations], bool))
        return Sample(image, target, record["image_id"], record["image_file"])

    def files(self, record: dict[str, Any]) -> list[FileCheck]:
        return [FileCheck(record["image_file"], "image", (record["height"], record["width"]))]

    def training_segment_counts(self) -> np.ndarray:
        return np.array([sum(not a["iscrowd"] for a in annotations) for annotations in self.records["annotations"]])


def load_coco_instance(
    root: str | os.PathLike,
    split: str = "train",
    *,
    images_dir: str | os.PathLike | None = None,
    annotation_file: str | os.PathLike | None = None,
) -> CocoInstanceSource:
    """Read a COCO instance split; every image of the JSON is a record (those without annotations too). Problems in
    the JSON are collected (see `validate_dataset`), not raised, except a JSON that cannot be used at all."""
    root = Path(root)
    names = split_candidates(split)
    images_dir = _path(images_dir, [root / n for n in names], f"image folder for split {split!r}")
    annotation_file = _path(
        annotation_file, [root / "annotations" / f"instances_{n}.json" for n in names], "instances JSON"
    )
    document = _load_json(annotation_file)
    category_to_label, id2label, _ = contiguous_categories(document["categories"], annotation_file, need_isthing=False)
    images, problems, _ = _images_by_id(document["images"], annotation_file)

    by_image: dict[Any, list[dict]] = {image_id: [] for image_id in images}
    for position, annotation in enumerate(document["annotations"]):
        name = f"{annotation_file}: annotation {annotation.get('id', f'at position {position}')}"
        missing = [key for key in ("image_id", "category_id", "segmentation") if key not in annotation]
        if missing:
            problems.append(f"{name} has no {missing}")
            continue
        if annotation["image_id"] not in images:
            problems.append(f"{name} has image_id {annotation['image_id']!r}, which is not in 'images'")
            continue
        if annotation["category_id"] not in category_to_label:
            problems.append(f"{name} (image {images[annotation['image_id']].get('file_name')}) has category_id "
                            f"{annotation['category_id']}, not in the categories")  # fmt: skip
        by_image[annotation["image_id"]].append({
            "id": int(annotation.get("id", -1)), "category_id": int(annotation["category_id"]),
            "iscrowd": bool(annotation.get("iscrowd", 0)), "segmentation": json.dumps(annotation["segmentation"]),
        })  # fmt: skip
    for image_id, image in images.items():
        missing = [key for key in ("file_name", "height", "width") if key not in image]
        if missing:
            problems.append(f"{annotation_file}: image {image_id!r} has no {missing}")

    image_ids, image_id_type = _image_id_column(list(images))
    columns = {
        "image_id": image_ids,
        "image_file": [str(images_dir / str(image.get("file_name", ""))) for image in images.values()],
        "height": [int(image.get("height", -1)) for image in images.values()],
        "width": [int(image.get("width", -1)) for image in images.values()],
        "annotations": list(by_image.values()),
    }
    features = datasets.Features({
        "image_id": image_id_type,
        "image_file": datasets.Value("string"), "height": datasets.Value("int64"), "width": datasets.Value("int64"),
        "annotations": [_ANNOTATION],
    })  # fmt: skip
    info = DatasetInfo(
        name=f"COCO instance {split} ({root})", task="instance", id2label=id2label, thing_ids=tuple(id2label),
        category_ids=tuple(category_to_label),
    )
    return CocoInstanceSource(
        records=datasets.Dataset.from_dict(columns, features=features), info=info,
        category_to_label=category_to_label, annotation_problems=problems,
    )  # fmt: skip
