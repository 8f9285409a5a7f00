"""Panoptic quality (training.metrics.panoptic_quality) against a direct, unoptimised implementation of panopticapi's
definition, and by hand."""

import math

import numpy as np
import pytest
import torch

from tests.training.metrics.helpers import NUM_LABELS, THING_IDS, assert_results_close, random_panoptic_case
from training.metrics import PanopticQuality


def reference_pq_counts(pred, pred_info, target, target_info):
    """Per-class [iou_sum, tp, fp, fn] of one image, one segment pair at a time (panopticapi's pq_compute_single_core
    with boolean masks)."""
    counts = np.zeros((NUM_LABELS, 4))
    target_segments = {s["id"]: s for s in target_info}
    pred_segments = {s["id"]: s for s in pred_info}
    target_void = ~np.isin(target, list(target_segments))
    matched_target, matched_pred = set(), set()
    for target_id, target_segment in target_segments.items():
        if target_segment["iscrowd"]:
            continue
        target_mask = target == target_id
        for pred_id, pred_segment in pred_segments.items():
            if pred_segment["label_id"] != target_segment["category_id"]:
                continue
            pred_mask = pred == pred_id
            intersection = (target_mask & pred_mask).sum()
            union = (target_mask | pred_mask).sum() - (pred_mask & target_void).sum()
            if union > 0 and intersection / union > 0.5:
                counts[target_segment["category_id"], :2] += [intersection / union, 1]
                matched_target.add(target_id)
                matched_pred.add(pred_id)
    for target_id, target_segment in target_segments.items():
        if target_id not in matched_target and not target_segment["iscrowd"]:
            counts[target_segment["category_id"], 3] += 1
    for pred_id, pred_segment in pred_segments.items():
        pred_mask = pred == pred_id
        if pred_id in matched_pred or not pred_mask.any():
            continue
        crowd = np.zeros_like(pred_mask)
        for target_id, target_segment in target_segments.items():
            if target_segment["iscrowd"] and target_segment["category_id"] == pred_segment["label_id"]:
                crowd |= target == target_id
        if ((pred_mask & target_void).sum() + (pred_mask & crowd).sum()) / pred_mask.sum() > 0.5:
            continue
        counts[pred_segment["label_id"], 2] += 1
    return counts


def reference_pq(counts):
    """panopticapi's pq_average for all / things / stuff, in percent."""
    results = {}
    for suffix, classes in (("", range(NUM_LABELS)), ("_things", THING_IDS),
                            ("_stuff", [c for c in range(NUM_LABELS) if c not in THING_IDS])):
        pq = sq = rq = n = 0
        for c in classes:
            iou, tp, fp, fn = counts[c]
            if tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + 0.5 * fp + 0.5 * fn)
            sq += iou / tp if tp else 0
            rq += tp / (tp + 0.5 * fp + 0.5 * fn)
        for name, value in (("pq", pq), ("sq", sq), ("rq", rq)):
            results[name + suffix] = 100 * value / n if n else math.nan
    return results


def test_panoptic_quality_matches_direct_reference_on_random_cases():
    metric = PanopticQuality(NUM_LABELS, THING_IDS)
    counts = np.zeros((NUM_LABELS, 4))
    for seed in range(40):
        case = random_panoptic_case(seed, size=16 if seed % 2 else 32)
        metric.update(*case)
        counts += reference_pq_counts(*case)
    state = metric.state_dict()
    np.testing.assert_allclose(state["iou_sum"].numpy(), counts[:, 0], atol=1e-9)
    for column, name in enumerate(("true_positives", "false_positives", "false_negatives"), start=1):
        np.testing.assert_array_equal(state[name].numpy(), counts[:, column])
    assert (counts[:, 1:].sum(0) > 0).all()  # TP, FP and FN all occur
    assert_results_close(metric.compute(), reference_pq(counts))


def two_segment_case():
    """4x8 ground truth: left half segment 1 (stuff class 0), right half segment 2 (thing class 3)."""
    target = np.zeros((4, 8), dtype=np.int64)
    target[:, :4], target[:, 4:] = 1, 2
    info = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 3, "iscrowd": 0}]
    return target, info


def pq_of(pred, pred_info, target, target_info, per_class=False):
    metric = PanopticQuality(NUM_LABELS, THING_IDS, id2label={0: "wall", 3: "car", 4: "person"})
    metric.update(pred, pred_info, target, target_info)
    return metric.compute(per_class=per_class)


def test_panoptic_quality_perfect_prediction_is_100():
    target, info = two_segment_case()
    pred_info = [{"id": 7, "label_id": 0}, {"id": 9, "category_id": 3}]  # both label keys are accepted
    results = pq_of(np.where(target == 1, 7, 9), pred_info, target, info)
    assert results["pq"] == results["sq"] == results["rq"] == 100.0
    assert results["pq_things"] == results["pq_stuff"] == 100.0


def test_panoptic_quality_one_false_positive_by_hand():
    target, info = two_segment_case()
    pred = target.copy()
    pred[:1, 4:] = 3  # a quarter of the car segment predicted as class 4: car IoU 0.75, one FP of class 4
    results = pq_of(pred, [{"id": 1, "label_id": 0}, {"id": 2, "label_id": 3}, {"id": 3, "label_id": 4}],
                    target, info, per_class=True)
    assert results["per_class"]["wall"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "tp": 1, "fp": 0, "fn": 0}
    assert results["per_class"]["car"]["pq"] == pytest.approx(75.0)
    assert results["per_class"]["person"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert results["pq"] == pytest.approx((100 + 75 + 0) / 3)
    assert results["rq"] == pytest.approx(200 / 3)
    assert results["pq_things"] == pytest.approx(75 / 2)
    assert results["pq_stuff"] == 100.0


@pytest.mark.parametrize("covered, expected_pq", [(8, 0.0), (9, 100 * 9 / 16)])
def test_panoptic_quality_iou_of_exactly_one_half_is_not_a_match(covered, expected_pq):
    target = np.zeros((4, 8), dtype=np.int64)
    target[:, :4] = 1  # 16 pixels, the rest void
    pred = np.full((4, 8), -1)
    pred.reshape(-1)[np.flatnonzero(target.reshape(-1))[:covered]] = 0
    results = pq_of(pred, [{"id": 0, "label_id": 0}], target, [{"id": 1, "category_id": 0, "iscrowd": 0}], True)
    assert results["pq"] == pytest.approx(expected_pq)
    assert results["per_class"]["wall"]["fp"] == results["per_class"]["wall"]["fn"] == (1 if covered == 8 else 0)


def test_panoptic_quality_void_and_crowd_handling():
    target = np.zeros((4, 8), dtype=np.int64)
    target[:, :2] = 1  # class 0, 8 pixels; columns 2..3 void
    target[:, 4:] = 2  # crowd region of class 4
    target_info = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 4, "iscrowd": 1}]
    pred = np.zeros((4, 8), dtype=np.int64)
    pred[:, :4] = 5  # covers the class-0 segment and the void next to it: void is left out of the union, IoU 1
    pred[:, 4:7] = 6  # class 4 on the crowd region: neither FP nor is the crowd region an FN
    pred[:, 7] = 8  # class 3 on the crowd region of class 4: a false positive
    pred_info = [{"id": 5, "label_id": 0}, {"id": 6, "label_id": 4}, {"id": 8, "label_id": 3}]
    results = pq_of(pred, pred_info, target, target_info, per_class=True)
    assert results["per_class"]["wall"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "tp": 1, "fp": 0, "fn": 0}
    assert "person" not in results["per_class"]  # class 4: no TP, FP or FN, so not averaged
    assert results["per_class"]["car"]["fp"] == 1  # class 3
    assert results["pq"] == pytest.approx(50.0)


def test_panoptic_quality_predicted_segment_mostly_on_void_is_not_a_false_positive():
    target, info = two_segment_case()
    target[:, 6:] = 0  # void
    pred = np.where(target == 1, 1, 0)
    pred[:, 5:] = 2  # 12 pixels, 8 of them on void -> ignored (and target segment 2 is missed: FN)
    results = pq_of(pred, [{"id": 1, "label_id": 0}, {"id": 2, "label_id": 4}], target, info, per_class=True)
    assert "person" not in results["per_class"]
    assert results["per_class"]["car"]["fn"] == 1


def test_panoptic_quality_accepts_coco_style_void_and_large_ids():
    target, info = two_segment_case()
    large = {1: 5_000_000, 2: 16_000_000}  # COCO panoptic PNG ids (R + 256 G + 256^2 B)
    target_large = np.vectorize(lambda i: large.get(i, 0))(target)
    info_large = [{**segment, "id": large[segment["id"]]} for segment in info]
    pred = torch.tensor(np.where(target == 1, 1, 2), dtype=torch.float32)  # float maps of whole numbers are fine
    pred_info = [{"id": torch.tensor(1), "label_id": 0}, {"id": 2, "label_id": torch.tensor(3)}]
    assert pq_of(pred, pred_info, target_large, info_large)["pq"] == 100.0


def test_panoptic_quality_rejects_bad_input_with_clear_errors():
    target, info = two_segment_case()
    metric = PanopticQuality(NUM_LABELS, THING_IDS)
    with pytest.raises(ValueError, match=r"pred_segmentation holds segment ids \[2\]"):
        metric.update(target, [{"id": 1, "label_id": 0}], target, info)
    with pytest.raises(ValueError, match=r"target_segments_info\[1\] has category_id 9"):
        metric.update(target, [], target, [info[0], {"id": 2, "category_id": 9}])
    with pytest.raises(ValueError, match="one size"):
        metric.update(target[:2], [], target, info)
    with pytest.raises(ValueError, match="more than once"):
        metric.update(target, [{"id": 1, "label_id": 0}] * 2, target, info)
    with pytest.raises(ValueError, match="integer ids"):
        metric.update(target + 0.5, [], target, info)
    with pytest.raises(ValueError, match="thing_ids"):
        PanopticQuality(3, thing_ids=[3])
    assert metric.state_dict()["true_positives"].sum() == 0  # nothing was added by the failed updates
