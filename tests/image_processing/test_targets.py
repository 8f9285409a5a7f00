"""Target encoding (image_processing.targets): panoptic / semantic / instance annotations -> masks, and the geometry
of a `MaskTarget`."""

import numpy as np
import pytest

from image_processing.targets import (
    MaskTarget,
    check_class_ids,
    id_to_rgb,
    instance_target,
    panoptic_target,
    rgb_to_id,
    semantic_target,
)
from image_processing.transforms import crop, pad_bottom_right, resize_labels


def test_rgb_id_round_trip_and_encoding():
    ids = np.array([[0, 1, 256], [65536, 123456, 256**3 - 1]])
    rgb = id_to_rgb(ids)
    assert rgb[0, 2].tolist() == [0, 1, 0] and rgb[1, 0].tolist() == [0, 0, 1]
    assert np.array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="segment ids must be in"):
        id_to_rgb(np.array([[-1]]))


def test_panoptic_target_masks_labels_crowd():
    id_map = np.zeros((4, 5), np.int64)
    id_map[:2] = 7
    id_map[2:, :2] = 9
    segments = [{"id": 7, "category_id": 3, "iscrowd": 0}, {"id": 9, "category_id": 5, "iscrowd": 1}, {"id": 11, "category_id": 3}]
    target = panoptic_target(id_map, segments, category_to_label={3: 0, 5: 1})
    assert target.labels.tolist() == [0, 1] and target.is_crowd.tolist() == [False, True]  # id 11 has no pixels
    assert np.array_equal(target.masks[0], id_map == 7) and np.array_equal(target.masks[1], id_map == 9)
    assert not target.masks.any(axis=0)[2:, 2:].any()  # void stays in no mask
    assert np.array_equal(target.semantic_map(255), np.where(id_map == 7, 0, np.where(id_map == 9, 1, 255)))


def test_panoptic_target_errors_name_the_source():
    id_map = np.array([[1, 2]])
    with pytest.raises(ValueError, match=r"a\.png: segment ids \[2\] in the PNG are not in segments_info"):
        panoptic_target(id_map, [{"id": 1, "category_id": 1}], source="a.png")
    with pytest.raises(ValueError, match=r"b\.png: segment 1 has category_id 4, not in the categories"):
        panoptic_target(id_map[:, :1], [{"id": 1, "category_id": 4}], {1: 0}, source="b.png")


def test_semantic_and_instance_targets():
    semantic = np.array([[0, 0, 255], [2, 2, 255]])
    target = semantic_target(semantic, ignore_index=255, num_labels=3)
    assert target.labels.tolist() == [0, 2] and target.masks.sum() == 4
    with pytest.raises(ValueError, match=r"class ids \[2\] are outside \[0, 2\)"):
        semantic_target(semantic, num_labels=2)
    instances = np.array([[0, 4, 4], [5, 5, 0]])
    target = instance_target(instances, {4: 1, 5: 1}, ignore_index=0)
    assert target.labels.tolist() == [1, 1] and np.array_equal(target.masks[0], instances == 4)
    with pytest.raises(ValueError, match=r"instance ids \[5\] have no entry"):
        instance_target(instances, {4: 1}, ignore_index=0)


def test_mask_target_select_and_non_empty():
    masks = np.zeros((3, 2, 2), bool)
    masks[0, 0, 0] = masks[2, 1, 1] = True
    target = MaskTarget(masks, [1, 2, 3], [False, True, False]).non_empty()
    assert target.labels.tolist() == [1, 3] and len(target) == 2
    with pytest.raises(ValueError, match="MaskTarget needs masks"):
        MaskTarget(masks, [1, 2], [False, False])


def test_mask_target_geometry_follows_the_label_arrays():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, :3, :4], masks[1, 3:, 4:], masks[2, 4, 6] = True, True, True  # the third: one pixel nearest skips
    target = MaskTarget(masks, [4, 5, 6], [False, True, False])
    assert target.resized((6, 8)) is target  # already that size: unchanged, nothing dropped
    small = target.resized((3, 4))
    assert np.array_equal(small.masks, resize_labels(masks, (3, 4))[[0, 1]])  # the single pixel vanished
    assert small.labels.tolist() == [4, 5] and small.is_crowd.tolist() == [False, True]
    window = target.cropped(0, 0, 3, 5)
    assert np.array_equal(window.masks, crop(masks, 0, 0, 3, 5)[[0]]) and window.labels.tolist() == [4]
    padded = target.padded((7, 10))
    assert np.array_equal(padded.masks, pad_bottom_right(masks, (7, 10))) and not padded.masks[:, 6:].any()
    assert padded.labels.tolist() == [4, 5, 6] and padded.is_crowd.tolist() == [False, True, False]


def test_check_class_ids_names_the_first_bad_ids():
    check_class_ids(np.array([0, 2, 2]), 3, "a")  # within range: no error
    with pytest.raises(ValueError, match=r"b: class ids \[3, 7\] are outside \[0, 3\) \(note\)"):
        check_class_ids(np.array([7, 0, 3, 3]), 3, "b", note=" (note)")
    with pytest.raises(ValueError, match=r"c: class ids \[-1\] are outside \[0, None\)"):
        check_class_ids([5, -1], None, "c")  # without num_labels only negative ids are wrong
    with pytest.raises(ValueError, match=r"d: class ids \[10, 11, 12, 13, 14, 15, 16, 17, 18, 19\] are"):
        check_class_ids(np.arange(30), 10, "d")  # the first ten are named
