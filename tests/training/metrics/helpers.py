"""What the metric tests share: random panoptic, semantic and instance cases (ground truth and a prediction derived
from it), filled accumulators and a comparison of result dicts."""

import math

import numpy as np
import pytest

from training.metrics import MaskAP, MeanIoU, PanopticQuality

NUM_LABELS = 6
THING_IDS = [3, 4, 5]


def paint_rectangles(rng, segment_map, ids, size):
    for segment_id in ids:
        y, x = rng.integers(0, size, 2)
        h, w = rng.integers(2, size // 2, 2)
        segment_map[y : y + h, x : x + w] = segment_id


def random_panoptic_case(seed, size=16):
    """Ground truth with void (0), stuff, things and crowd regions, and a prediction derived from it by moving,
    relabelling and adding segments; prediction ids follow transformers (from 0, -1 = void)."""
    rng = np.random.default_rng(seed)
    target = np.zeros((size, size), dtype=np.int64)
    paint_rectangles(rng, target, range(1, 9), size)
    target_info = [
        {"id": int(i), "category_id": int(rng.integers(NUM_LABELS)), "iscrowd": int(rng.random() < 0.15)}
        for i in np.unique(target)
        if i != 0
    ]

    pred = target.copy()
    pred[rng.random((size, size)) < 0.05] = 0  # scattered void pixels
    paint_rectangles(rng, pred, range(9, 9 + int(rng.integers(0, 4))), size)  # new segments
    for segment_id in rng.choice(np.arange(1, 9), size=2, replace=False):  # shift two existing segments
        dy, dx = rng.integers(-3, 4, 2)
        moved = np.roll(target == segment_id, (dy, dx), axis=(0, 1))
        pred[pred == segment_id] = 0
        pred[moved] = segment_id
    labels = {info["id"]: info["category_id"] for info in target_info}
    pred_info = []
    for new_id, segment_id in enumerate(i for i in np.unique(pred) if i != 0):
        label = labels.get(int(segment_id), int(rng.integers(NUM_LABELS)))
        if rng.random() < 0.1:
            label = int(rng.integers(NUM_LABELS))
        pred_info.append({"id": new_id, "label_id": label})
        pred[pred == segment_id] = -(new_id + 100)  # renumber in place without collisions
    pred[pred == 0] = -1
    pred[pred < -1] = -pred[pred < -1] - 100
    return pred, pred_info, target, target_info


def random_semantic_case(seed, num_labels=5, ignore_index=255, size=16):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_labels - 1, (size, size))  # the last class never occurs in the ground truth
    target[rng.random((size, size)) < 0.1] = ignore_index
    pred = np.where(rng.random((size, size)) < 0.6, target, rng.integers(0, num_labels - 1, (size, size)))
    pred[pred == ignore_index] = 0
    return pred, target


def random_instance_case(seed, size=100, num_labels=3):
    """Ground-truth rectangles of small, medium and large COCO areas (some crowd) and noisy predictions of them."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 6))
    target_masks = np.zeros((count, size, size), dtype=bool)
    for mask in target_masks:
        h, w = rng.integers(4, size, 2)
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        mask[y : y + h, x : x + w] = True
    target_labels = rng.integers(0, num_labels, count)
    target_iscrowd = (rng.random(count) < 0.15).astype(np.int64)

    pred_masks, pred_labels = [], []
    for mask, label in zip(target_masks, target_labels):
        if rng.random() < 0.8:  # found, shifted a little, sometimes with the wrong class
            pred_masks.append(np.roll(mask, tuple(rng.integers(-4, 5, 2)), axis=(0, 1)))
            pred_labels.append(label if rng.random() < 0.85 else rng.integers(num_labels))
    for _ in range(int(rng.integers(0, 3))):  # false detections
        mask = np.zeros((size, size), dtype=bool)
        y, x = rng.integers(0, size - 20, 2)
        mask[y : y + int(rng.integers(3, 20)), x : x + int(rng.integers(3, 20))] = True
        pred_masks.append(mask)
        pred_labels.append(rng.integers(num_labels))
    pred_masks = np.stack(pred_masks) if pred_masks else np.zeros((0, size, size), dtype=bool)
    pred_scores = rng.random(len(pred_masks))
    return pred_masks, pred_scores, np.array(pred_labels, dtype=np.int64), target_masks, target_labels, target_iscrowd


def assert_results_close(actual, expected):
    assert set(expected) <= set(actual)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_results_close(actual[key], value)
        elif math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-9), key


def filled(metric_cls, cases, **kwargs):
    metric = metric_cls(**kwargs)
    for case in cases:
        metric.update(*case)
    return metric


MAIN_RESULT = {"panoptic_quality": "pq", "mean_iou": "mean_iou", "mask_ap": "ap"}
METRICS = {
    "panoptic_quality": (PanopticQuality, {"num_labels": NUM_LABELS, "thing_ids": THING_IDS},
                         [random_panoptic_case(seed) for seed in range(8)]),
    "mean_iou": (MeanIoU, {"num_labels": 5}, [random_semantic_case(seed) for seed in range(8)]),
    "mask_ap": (MaskAP, {"num_labels": 3}, [random_instance_case(seed, size=48) for seed in range(8)]),
}
