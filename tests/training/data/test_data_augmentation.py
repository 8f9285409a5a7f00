"""Training augmentation: image/mask alignment, the authors' order and factors, determinism across workers."""

import colorsys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from image_processing.targets import MaskTarget
from tests.training.data_helpers import synthetic_panoptic  # noqa: F401 (fixture)
from training.data import AugmentationConfig, EpochCallback, augment, load_coco_panoptic, make_train_dataset, sample_rng
from training.data.augmentation import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    pack_masks,
    scale_jitter_size,
    unpack_masks,
)

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8)


def _colour_coded(height=60, width=90):
    """An image whose pixel colour says which mask a pixel belongs to (5 asymmetric blocks, grey background)."""
    image = np.full((height, width, 3), 128, np.uint8)
    masks = np.zeros((len(COLOURS), height, width), bool)
    for index, (top, left, h, w) in enumerate(
        [(0, 0, 20, 30), (5, 40, 30, 20), (30, 5, 25, 25), (40, 60, 20, 30), (40, 35, 15, 20)]
    ):
        masks[index, top : top + h, left : left + w] = True
        image[masks[index]] = COLOURS[index]
    return image, MaskTarget(masks, np.arange(len(COLOURS)), np.zeros(len(COLOURS), bool))


def test_masks_stay_aligned_with_the_image_through_flip_scale_and_crop():
    image, target = _colour_coded()
    config = AugmentationConfig(input_size=48, scale_range=(0.3, 2.0), color_jitter=False)
    flipped = 0
    for index in range(40):
        view, view_target = augment(image, target, sample_rng(0, 0, index), config)
        assert view.shape == (48, 48, 3) and view_target.masks.shape[1:] == (48, 48)
        for mask, label in zip(view_target.masks, view_target.labels):
            # interior pixels (away from bilinear blending at the edges) have exactly the mask's colour
            interior = mask.copy()
            interior[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            interior[[0, -1]] = interior[:, [0, -1]] = False
            if interior.any():
                assert (view[interior] == COLOURS[label]).all()
            assert (np.abs(view[mask].astype(int) - COLOURS[label]).max(1) < 100).mean() > 0.8
        covered = view_target.masks.any(0)
        assert (view[~covered] != COLOURS[:, None]).any(-1).all()  # no mask colour outside the masks
        # where was block 0 (top-left in the source) relative to block 1? a flip swaps left and right
        if {0, 1} <= set(view_target.labels.tolist()):
            cols = [
                np.flatnonzero(view_target.masks[view_target.labels.tolist().index(k)].any(0)).mean() for k in (0, 1)
            ]
            flipped += cols[0] > cols[1]
    assert flipped > 0  # flips happened and stayed aligned


def test_scale_jitter_pad_and_crop_geometry():
    assert scale_jitter_size(480, 640, (640, 640), 1.0) == (480, 640)
    assert scale_jitter_size(480, 640, (640, 640), 0.1) == (48, 64)
    assert scale_jitter_size(100, 50, (64, 64), 1.0) == (64, 32)
    image, target = _colour_coded(100, 50)
    config = AugmentationConfig(input_size=64, scale_range=(1.0, 1.0), horizontal_flip=False, color_jitter=False)
    view, view_target = augment(image, target, sample_rng(0, 0, 0), config)
    assert (view[:, 32:] == 0).all() and not view_target.masks[:, :, 32:].any()  # padded right, at (0, 0)
    assert (view[:, :32] != 0).any(-1).all()


def test_crowd_dropped_empty_masks_dropped_and_retry():
    height = width = 64
    masks = np.zeros((3, height, width), bool)
    masks[0, :12, :12] = True  # small, in a corner: most crops miss it
    masks[1, 30:, 30:] = True  # crowd
    target = MaskTarget(masks[[0, 1]], [4, 7], [False, True])
    image = np.zeros((height, width, 3), np.uint8)
    config = AugmentationConfig(input_size=32, scale_range=(1.5, 2.0), color_jitter=False, max_attempts=100)
    for index in range(10):
        _, view_target = augment(image, target, sample_rng(1, 0, index), config)
        assert view_target.labels.tolist() == [4]  # the crowd never appears; the tiny mask always survives a redraw
        assert view_target.masks.any()
    single_try = AugmentationConfig(input_size=32, scale_range=(1.5, 2.0), color_jitter=False, max_attempts=1)
    assert sum(len(augment(image, target, sample_rng(1, 0, i), single_try)[1]) == 0 for i in range(10)) >= 3
    # only crowd segments: no infinite retry, an empty target
    _, view_target = augment(image, target.select([1]), sample_rng(1, 0, 0), config)
    assert len(view_target) == 0 and view_target.masks.shape == (0, 32, 32)


def test_mask_packing_round_trip():
    masks = np.random.default_rng(0).random((11, 5, 7)) > 0.5
    packed = pack_masks(masks)
    assert packed.shape == (2, 5, 7) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, 11), masks)
    assert unpack_masks(pack_masks(np.zeros((0, 5, 7), bool)), 0).shape == (0, 5, 7)


def test_colour_operations_follow_their_definitions():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(adjust_brightness(image, 1.0), image)
    np.testing.assert_array_equal(adjust_brightness(image, 0.5), (image * 0.5).astype(np.uint8))
    grey = adjust_saturation(image, 0.0)
    assert (grey == grey[..., :1]).all()
    flat = adjust_contrast(image, 0.0)
    assert (flat == flat[0, 0]).all() and abs(int(flat[0, 0, 0]) - (image @ [0.2989, 0.587, 0.114]).mean()) <= 1.5
    np.testing.assert_array_equal(adjust_contrast(image, 1.0), image)
    np.testing.assert_array_equal(adjust_hue(image, 0.0), image)
    np.testing.assert_array_equal(adjust_hue(np.array([[[255, 0, 0]]], np.uint8), 1 / 3), [[[0, 255, 0]]])
    for shift in (0.05, -0.05):  # against the standard library's HSV
        expected = [
            [colorsys.hsv_to_rgb((h + shift) % 1, s, v) for h, s, v in (colorsys.rgb_to_hsv(*(p / 255)) for p in row)]
            for row in image
        ]
        assert np.abs(adjust_hue(image, shift).astype(float) - np.array(expected) * 255).max() <= 1.0


def test_colour_jitter_applies_each_operation_with_probability_half():
    image = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    config = AugmentationConfig()
    unchanged = sum(np.array_equal(color_jitter(image, sample_rng(0, 0, i), config), image) for i in range(400))
    assert 10 <= unchanged <= 45  # all four skipped: 1/16 of 400 = 25


def _batches(dataset, num_workers, epochs=(0,), persistent=False):
    loader = DataLoader(dataset, batch_size=3, num_workers=num_workers, collate_fn=list, persistent_workers=persistent)
    out = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        out += [example for batch in loader for example in batch]
    return out


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["mask_labels"], b["mask_labels"])
        assert torch.equal(a["class_labels"], b["class_labels"])


def test_workers_do_not_change_the_batches(synthetic_panoptic):
    root, _ = synthetic_panoptic
    config = AugmentationConfig(input_size=32, color_jitter=True)
    dataset = make_train_dataset(root, "train", augmentation=config, seed=5)
    single = _batches(dataset, 0, epochs=(0, 1))
    _assert_same(single, _batches(dataset, 2, epochs=(0, 1)))
    _assert_same(single, _batches(dataset, 2, epochs=(0, 1), persistent=True))  # set_epoch reaches live workers
    assert not torch.equal(single[0]["pixel_values"], single[len(dataset)]["pixel_values"])  # epochs differ
    example = single[0]
    assert example["pixel_values"].dtype == torch.float32 and example["pixel_values"].shape == (3, 32, 32)
    assert example["mask_labels"].dtype == torch.bool and example["mask_labels"].shape[1:] == (32, 32)
    assert example["class_labels"].dtype == torch.int64 and len(example["class_labels"]) == len(example["mask_labels"])


def test_epoch_callback_sets_the_epoch(synthetic_panoptic):
    dataset = make_train_dataset(load_coco_panoptic(synthetic_panoptic[0], "train"), input_size=32)
    state = type("State", (), {"epoch": 2.0})()
    EpochCallback(dataset).on_epoch_begin(None, state, None)
    assert dataset.epoch == 2
    state.epoch = 2.5  # resumed in the middle of epoch 2
    EpochCallback(dataset).on_epoch_begin(None, state, None)
    assert dataset.epoch == 2


def test_bad_augmentation_settings_are_rejected():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentationConfig(scale_range=(0.0, 2.0))
    image, target = _colour_coded()
    with pytest.raises(ValueError, match=r"target masks are \(60, 90\)"):
        augment(image[:50], target, sample_rng(0, 0, 0), AugmentationConfig(input_size=32))
