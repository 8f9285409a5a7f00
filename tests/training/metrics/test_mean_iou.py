"""Mean IoU (training.metrics.mean_iou) against a direct per-pixel loop."""

import math

import numpy as np
import pytest
import torch

from tests.training.metrics.helpers import random_semantic_case
from training.metrics import MeanIoU


def reference_iou(pairs, num_labels, ignore_index):
    intersection, union = np.zeros(num_labels), np.zeros(num_labels)
    correct = total = 0
    for pred, target in pairs:
        for p, t in zip(pred.reshape(-1), target.reshape(-1)):
            if t == ignore_index:
                continue
            correct += p == t
            total += 1
            for c in range(num_labels):
                intersection[c] += p == c and t == c
                union[c] += p == c or t == c
    return intersection, union, 100 * correct / total


@pytest.mark.parametrize("ignore_index", [255, -1])
def test_mean_iou_matches_direct_loop(ignore_index):
    pairs = [random_semantic_case(seed, ignore_index=ignore_index) for seed in range(6)]
    metric = MeanIoU(5, ignore_index=ignore_index, id2label={0: "road"})
    for pred, target in pairs:
        metric.update(torch.from_numpy(pred), target)
    intersection, union, accuracy = reference_iou(pairs, 5, ignore_index)
    present = union > 0
    assert not present[4]  # class 4 is absent from both: excluded from the mean
    results = metric.compute(per_class=True)
    assert results["mean_iou"] == pytest.approx(100 * np.mean(intersection[present] / union[present]))
    assert results["pixel_accuracy"] == pytest.approx(accuracy)
    assert results["per_class_iou"]["road"] == pytest.approx(100 * intersection[0] / union[0])
    assert math.isnan(results["per_class_iou"]["4"])

    authors = MeanIoU(5, ignore_index=ignore_index, absent_classes="zero")
    authors.update(np.stack([p for p, _ in pairs]), np.stack([t for _, t in pairs]))  # a batch (B, H, W) works too
    expected = 100 * np.sum(intersection[present] / union[present]) / 5
    assert authors.compute()["mean_iou"] == pytest.approx(expected)


def test_mean_iou_rejects_out_of_range_ids():
    metric = MeanIoU(3)
    with pytest.raises(ValueError, match=r"target holds class ids \[3\], expected ids in \[0, 3\) or 255"):
        metric.update(np.zeros((2, 2), dtype=np.int64), np.array([[0, 3], [1, 255]]))
    with pytest.raises(ValueError, match="pred holds class ids"):
        metric.update(np.array([[0, -1]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="one shape"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="is a class id"):
        MeanIoU(3, ignore_index=2)
