"""Readers: each official layout generated in a tmp dir, decoded into (image, MaskTarget) with the right labels."""

import json
import pickle

import datasets
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from image_processing.targets import id_to_rgb
from tests.training.data_helpers import synthetic_ade, synthetic_instance, synthetic_panoptic  # noqa: F401 (fixtures)
from training.data import (
    detect_format,
    from_hf_dataset,
    load_ade20k,
    load_cityscapes,
    load_coco_instance,
    load_coco_panoptic,
    load_source,
)
from training.data.base import SampleError
from training.data.synthetic import CLASS_NAMES, THING_CLASSES, _fill, _uncompressed_rle


def _write_coco_instance_by_hand(root, masks_by_kind):
    """One 20x24 image with a polygon, a compressed RLE and an uncompressed (crowd) RLE annotation."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(root / "val2017" / "a.jpg")
    compressed = mask_utils.encode(np.asfortranarray(masks_by_kind["rle"].astype(np.uint8)))
    annotations = [
        {"id": 10, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
        {"id": 11, "image_id": 7, "category_id": 90, "iscrowd": 0,
         "segmentation": {"size": [20, 24], "counts": compressed["counts"].decode()}},
        {"id": 12, "image_id": 7, "category_id": 3, "iscrowd": 1,
         "segmentation": _uncompressed_rle(masks_by_kind["crowd"])},
    ]  # fmt: skip
    document = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "height": 20, "width": 24},
            {"id": 8, "file_name": "b.jpg", "height": 20, "width": 24},
        ],
        "annotations": annotations,
        "categories": [{"id": 90, "name": "kite"}, {"id": 3, "name": "car"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "val2017" / "b.jpg")


def test_coco_panoptic_reads_back_the_generated_masks(synthetic_panoptic):
    root, scenes = synthetic_panoptic
    source = load_coco_panoptic(root, "val")
    assert source.info.task == "panoptic" and source.info.num_labels == len(CLASS_NAMES)
    assert source.info.id2label == dict(enumerate(CLASS_NAMES))  # sorted category ids with gaps -> 0..7
    assert source.info.thing_ids == tuple(range(len(THING_CLASSES)))
    assert len(source) == len(scenes)
    for sample, scene in zip(source, scenes):
        expected = {}
        for segment in scene.segments:
            expected[segment["category_id"], segment["iscrowd"]] = expected.get(
                (segment["category_id"], segment["iscrowd"]), []
            )
            expected[segment["category_id"], segment["iscrowd"]].append(scene.segment_map == segment["id"])
        assert len(sample.target) == len(scene.segments)
        for mask, label, crowd in zip(sample.target.masks, sample.target.labels, sample.target.is_crowd):
            candidates = expected[int(label), int(crowd)]
            assert any(np.array_equal(mask, c) for c in candidates)
        assert sample.image.shape == (*scene.segment_map.shape, 3)
        assert np.abs(sample.image.astype(int) - np.asarray(scene.image, int)).mean() < 5  # JPEG (quality 95)
    assert any(source[i].target.is_crowd.any() for i in range(len(source)))


def test_coco_panoptic_full_size_split_names(synthetic_panoptic):
    root, _ = synthetic_panoptic
    assert len(load_coco_panoptic(root, "val2017")) == len(load_coco_panoptic(root, "val"))
    with pytest.raises(FileNotFoundError, match="test2017"):
        load_coco_panoptic(root, "test")


def test_coco_instance_polygon_rle_and_crowd(tmp_path):
    rle_mask = np.zeros((20, 24), bool)
    rle_mask[5:15, 8:20] = True  # overlaps the polygon square
    crowd = np.zeros((20, 24), bool)
    crowd[0, :] = True  # first pixel set: uncompressed counts start with 0
    crowd[15:, 18:] = True
    _write_coco_instance_by_hand(tmp_path, {"rle": rle_mask, "crowd": crowd})
    source = load_coco_instance(tmp_path, "val")
    assert source.info.id2label == {0: "car", 1: "kite"} and source.info.thing_ids == (0, 1)
    assert len(source) == 2  # the image without annotations is a record too
    target = source[0].target
    assert target.labels.tolist() == [0, 1, 0] and target.is_crowd.tolist() == [False, False, True]
    square = target.masks[0]
    assert square[3:12, 3:12].all() and not square[13:].any() and not square[:, 13:].any()
    np.testing.assert_array_equal(target.masks[1], rle_mask)
    np.testing.assert_array_equal(target.masks[2], crowd)
    assert (target.masks[0] & target.masks[1]).any()  # overlapping instances stay separate masks
    assert len(source[1].target) == 0 and source[1].target.size == (20, 24)
    assert source.training_segment_counts().tolist() == [2, 0]


def test_synthetic_coco_instance_round_trip(synthetic_instance):
    root, scenes = synthetic_instance
    source = load_coco_instance(root, "val")
    assert source.info.id2label == dict(enumerate(THING_CLASSES))
    for sample, scene in zip(source, scenes):
        things = [s for s in scene.segments if s["isthing"]]
        assert sample.target.labels.tolist() == [s["category_id"] for s in things]
        for mask, crowd, segment in zip(sample.target.masks, sample.target.is_crowd, things):
            visible = scene.segment_map == segment["id"]
            if crowd:  # crowds are stored as the RLE of the visible pixels: exact
                np.testing.assert_array_equal(mask, visible)
            else:  # the polygon of the whole shape; PIL's fill adds the outline, pycocotools does not
                whole = _fill(scene.polygons[segment["id"]], scene.segment_map.shape[0])
                assert (mask & whole).sum() / (mask | whole).sum() > 0.75


def test_ade20k_reduces_labels(synthetic_ade):
    root, scenes = synthetic_ade
    source = load_ade20k(root, "validation", id2label=dict(enumerate(CLASS_NAMES)))
    assert source.info.task == "semantic" and source.info.ignore_index == 255
    for sample, scene in zip(source, scenes):
        expected = np.where(scene.semantic_map < 0, 255, scene.semantic_map)
        np.testing.assert_array_equal(sample.target.semantic_map(), expected)
    assert load_ade20k(root, "train").info.num_labels == 150  # the ADE20K names by default


def test_ade20k_value_above_the_classes_is_an_error(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "training" / "x.jpg")
    Image.fromarray(np.full((8, 8), 151, np.uint8)).save(tmp_path / "annotations" / "training" / "x.png")
    with pytest.raises(SampleError, match=r"x\.png.*\[151\]"):
        load_ade20k(tmp_path, "train")[0]


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    city = "aachen"
    (tmp_path / "leftImg8bit" / "val" / city).mkdir(parents=True)
    (tmp_path / "gtFine" / "val" / city).mkdir(parents=True)
    label_ids = np.array([[7, 26, 0, 33, 9, 24]], np.uint8).repeat(
        3, 0
    )  # road, car, unlabeled, bicycle, parking, person
    Image.fromarray(np.zeros((3, 6, 3), np.uint8)).save(
        tmp_path / "leftImg8bit" / "val" / city / f"{city}_000000_000019_leftImg8bit.png"
    )
    Image.fromarray(label_ids).save(tmp_path / "gtFine" / "val" / city / f"{city}_000000_000019_gtFine_labelIds.png")
    Image.fromarray(label_ids).save(
        tmp_path / "gtFine" / "val" / city / f"{city}_000000_000019_gtFine_color.png"
    )  # ignored
    source = load_cityscapes(tmp_path, "val")
    assert len(source) == 1 and source.info.num_labels == 19 and source.info.thing_ids == tuple(range(11, 19))
    np.testing.assert_array_equal(source[0].target.semantic_map()[0], [0, 13, 255, 18, 255, 11])
    assert source.info.id2label[13] == "car"


def _hub_rows(count=3):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)) for _ in range(count)]
    semantic = [np.arange(10 * 12).reshape(10, 12) % 4 for _ in range(count)]  # 0 = unlabelled with reduce_labels
    return images, semantic


def test_hub_semantic_from_save_to_disk(tmp_path):
    images, semantic = _hub_rows()
    dataset = datasets.Dataset.from_dict(
        {"img": images, "label": [Image.fromarray(m.astype(np.uint8)) for m in semantic]}
    )
    datasets.DatasetDict({"train": dataset}).save_to_disk(tmp_path / "hub")
    source = load_source(tmp_path / "hub", "train", kind="semantic", image_column="img", annotation_column="label",
                         id2label={0: "a", 1: "b", 2: "c"}, reduce_labels=True)  # fmt: skip
    assert detect_format(tmp_path / "hub") == "hf_disk"
    sample = pickle.loads(pickle.dumps(source))[1]
    np.testing.assert_array_equal(sample.image, np.asarray(images[1]))
    np.testing.assert_array_equal(sample.target.semantic_map(), np.where(semantic[1] == 0, 255, semantic[1] - 1))


def test_hub_instance_and_panoptic_columns():
    images, _ = _hub_rows(1)
    instance_map = np.zeros((10, 12), np.int32)
    instance_map[:5, :6], instance_map[5:, 6:] = 3, 9
    dataset = datasets.Dataset.from_dict(
        {"image": images, "inst": [instance_map.tolist()], "classes": [[[3, 1], [9, 0]]]}
    )
    source = from_hf_dataset(
        dataset, "instance", annotation_column="inst", mapping_column="classes", id2label={0: "x", 1: "y"}
    )
    target = source[0].target
    assert target.labels.tolist() == [1, 0] and np.array_equal(target.masks[0], instance_map == 3)

    segments = [{"id": 300, "category_id": 1, "iscrowd": 0}, {"id": 70000, "category_id": 0, "iscrowd": 1}]
    ids = np.where(instance_map == 3, 300, np.where(instance_map == 9, 70000, 0))
    features = datasets.Features({
        "image": datasets.Image(), "png": datasets.Image(),
        "segments_info": [{"id": datasets.Value("int64"), "category_id": datasets.ClassLabel(names=["sky", "dog"]),
                           "iscrowd": datasets.Value("int64")}],
    })  # fmt: skip
    panoptic = datasets.Dataset.from_dict(
        {"image": images, "png": [Image.fromarray(id_to_rgb(ids))], "segments_info": [segments]}, features=features
    )
    source = from_hf_dataset(
        panoptic, "panoptic", annotation_column="png", segments_info_column="segments_info", thing_ids=[1]
    )
    assert source.info.id2label == {0: "sky", 1: "dog"} and source.info.stuff_ids == (0,)
    target = source[0].target
    assert target.labels.tolist() == [1, 0] and target.is_crowd.tolist() == [False, True]
    np.testing.assert_array_equal(target.masks[1], ids == 70000)


def test_hub_bad_columns_are_named():
    images, _ = _hub_rows(1)
    dataset = datasets.Dataset.from_dict({"image": images})
    with pytest.raises(ValueError, match=r"\['seg'\].*\['image'\]"):
        from_hf_dataset(dataset, "semantic", annotation_column="seg", id2label={0: "a"})
    with pytest.raises(ValueError, match="segments_info_column"):
        from_hf_dataset(dataset, "panoptic", annotation_column="image", id2label={0: "a"})


def test_detect_format(synthetic_panoptic, synthetic_ade, tmp_path):
    assert detect_format(synthetic_panoptic[0]) == "coco_panoptic"
    assert detect_format(synthetic_ade[0]) == "ade20k"
    with pytest.raises(ValueError, match="no known layout"):
        detect_format(tmp_path)
