"""Hostile data sets through the Python API (`training.data` readers, `validate_dataset`, `make_train_dataset`): every
problem named with its file before anything trains; what is only odd is a warning, never dropped silently."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from image_processing.targets import id_to_rgb
from tests.robustness.cases import Case, as_params, check_case, edit_json
from training.data import (
    from_hf_dataset,
    load_coco_instance,
    load_coco_panoptic,
    load_semantic_folder,
    make_train_dataset,
    validate_dataset,
)


def validate(load, artifact: str, prepare, *args, **options):
    """`validate_dataset(load(copy of artifact, *args))` after `prepare(root)`."""

    def build(c):
        root = c.copy(artifact)
        prepare(root)
        return lambda: validate_dataset(load(root, *args), progress=False, **options)

    return build


def semantic_folder(c):
    """Two 16x16 image / label pairs with classes 0..2, the second label holding 7."""
    for folder in ("images", "labels"):
        (c.dir / folder).mkdir()
    for index, value in enumerate((2, 7)):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(c.dir / "images" / f"{index}.jpg")
        Image.fromarray(np.full((16, 16), value, np.uint8)).save(c.dir / "labels" / f"{index}.png")
    source = load_semantic_folder(c.dir / "images", c.dir / "labels", {0: "a", 1: "b", 2: "c"})
    return lambda: validate_dataset(source, progress=False)


def hub_rows(c):
    rows = datasets.Dataset.from_dict({
        "image": [Image.fromarray(np.zeros((16, 16, 3), np.uint8))] * 2,
        "label": [Image.fromarray(np.full((16, 16), value, np.uint8)) for value in (1, 5)],
    })  # fmt: skip
    source = from_hf_dataset(rows, "semantic", annotation_column="label", id2label={0: "a", 1: "b"})
    return lambda: validate_dataset(source, progress=False)


def segment_without_pixels(root):
    """The last PNG loses its first listed segment (painted void)."""
    annotation = json.loads((root / "annotations" / "panoptic_train2017.json").read_text())["annotations"][-1]
    png = root / "annotations" / "panoptic_train2017" / annotation["file_name"]
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    ids[ids == annotation["segments_info"][0]["id"]] = 0
    Image.fromarray(id_to_rgb(ids)).save(png)


def duplicate_ids(root):
    def edit(document):
        document["images"][2]["id"] = document["images"][1]["id"]

    edit_json(root / "annotations" / "instances_train2017.json", edit)


def two_annotations(root):
    edit_json(root / "annotations" / "panoptic_train2017.json",
              lambda d: d["annotations"][1].update(image_id=d["annotations"][0]["image_id"]))  # fmt: skip


CASES = [
    Case("data", "semantic folder value out of range", semantic_folder,
         expect=["{dir}/labels/1.png holds label values [7] that this data set does not define"]),
    Case("data", "datasets rows with a class out of range", hub_rows,
         expect=["row 1 of", "class ids [5] are outside [0, 2)"]),
    Case("data", "segment listed without pixels", validate(load_coco_panoptic, "coco", segment_without_pixels, "train"),
         error=None, expect=["000000000004.png: segments [", "] of segments_info have no pixels in the PNG (left out)"]),
    Case("data", "COCO instance duplicate image ids", validate(load_coco_instance, "coco_instance", duplicate_ids, "train"),
         expect=["instances_train2017.json: 2 entries of 'images' have the id 2 (000000000002.jpg, 000000000003.jpg); "
                 "image ids must be unique"]),
    Case("data", "two annotations for one image", validate(load_coco_panoptic, "coco", two_annotations, "train"),
         expect=["panoptic_train2017.json: image_id 1 has 2 annotations (000000000001.png, 000000000002.png); one per "
                 "image"]),
    Case("data", "unknown validation mode", lambda c: lambda: make_train_dataset(c.coco, validate="sometimes"),
         expect=["validate must be True, False or one of ('fast', 'full', 'skip'), got 'sometimes'"]),
]  # fmt: skip


@pytest.mark.parametrize("case", as_params(CASES))
def test_hostile_data(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
