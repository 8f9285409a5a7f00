"""Target encoding (panoptic / semantic / instance -> masks) and the shared resize/pad/crop primitives."""

import numpy as np
import pytest
from PIL import Image

from image_processing.targets import MaskTarget, id_to_rgb, instance_target, panoptic_target, rgb_to_id, semantic_target
from image_processing.transforms import (
    crop,
    longest_side_size,
    normalize_image,
    pad_bottom_right,
    resize_image,
    resize_labels,
    shortest_side_size,
)


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


@pytest.mark.parametrize("size, longest, expected", [((480, 640), 640, (480, 640)), ((100, 40), 64, (64, 26)), ((1, 43), 64, (1, 64))])
def test_longest_side_size(size, longest, expected):
    assert longest_side_size(*size, longest) == expected
    assert max(expected) == longest


def test_shortest_side_size_and_bad_size():
    assert shortest_side_size(300, 1000, 512) == (512, 1707)
    with pytest.raises(ValueError, match="must be positive"):
        shortest_side_size(0, 10, 5)


def test_resize_matches_pil_and_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((100, 60), Image.BILINEAR))
    assert np.array_equal(resize_image(image, (60, 100)), expected)
    ids = rng.integers(0, 70000, (30, 50))
    resized = resize_labels(ids, (45, 20))
    assert set(np.unique(resized)) <= set(np.unique(ids))  # nearest: no new values
    masks = ids[None] == np.unique(ids)[:3, None, None]
    assert np.array_equal(resize_labels(masks, (45, 20)), resized[None] == np.unique(ids)[:3, None, None])


def test_pad_and_crop():
    image = np.ones((3, 4, 3), np.uint8)
    padded = pad_bottom_right(image, (5, 6), channels_last=True)
    assert padded.shape == (5, 6, 3) and padded[3:].sum() == 0 and padded[:3, :4].all()
    masks = np.ones((2, 3, 4), bool)
    assert pad_bottom_right(masks, (2, 2)).shape == (2, 3, 4)  # never shrinks
    assert crop(padded, 1, 2, 3, 3, channels_last=True).shape == (3, 3, 3)


def test_normalize_image():
    import torch

    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255
    pixels = normalize_image(image)
    assert pixels.shape == (3, 2, 3) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], torch.full((2, 3), (1 - 0.485) / 0.229))
    torch.testing.assert_close(pixels[2], torch.full((2, 3), -0.406 / 0.225))
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) image"):
        normalize_image(np.zeros((2, 3), np.uint8))
