"""Streaming metrics against direct, unoptimised implementations of the COCO / semantic definitions."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from training.metrics import MaskAP, MeanIoU, PanopticQuality, encode_masks, load_metric

NUM_LABELS = 6
THING_IDS = [3, 4, 5]


# ----------------------------------------------------------------------------------------------------------------------
# Random cases
# ----------------------------------------------------------------------------------------------------------------------


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


def assert_results_close(actual, expected):
    assert set(expected) <= set(actual)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_results_close(actual[key], value)
        elif math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-9), key


# ----------------------------------------------------------------------------------------------------------------------
# Panoptic quality
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Mean IoU
# ----------------------------------------------------------------------------------------------------------------------


def random_semantic_case(seed, num_labels=5, ignore_index=255, size=16):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_labels - 1, (size, size))  # the last class never occurs in the ground truth
    target[rng.random((size, size)) < 0.1] = ignore_index
    pred = np.where(rng.random((size, size)) < 0.6, target, rng.integers(0, num_labels - 1, (size, size)))
    pred[pred == ignore_index] = 0
    return pred, target


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


# ----------------------------------------------------------------------------------------------------------------------
# Mask AP
# ----------------------------------------------------------------------------------------------------------------------


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


def cocoeval_directly(cases):
    """COCOeval on each mask encoded on its own, detections through `loadRes` (category ids shifted by one)."""
    images, annotations, detections = [], [], []
    for image_id, (pred_masks, scores, pred_labels, target_masks, target_labels, iscrowd) in enumerate(cases, 1):
        images.append({"id": image_id, "height": target_masks.shape[1], "width": target_masks.shape[2]})
        for mask, label, crowd in zip(target_masks, target_labels, iscrowd):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "segmentation": rle, "area": float(mask.sum()),
                                "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": int(crowd)})
        for mask, label, score in zip(pred_masks, pred_labels, scores):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            detections.append({"image_id": image_id, "category_id": int(label) + 1, "segmentation": rle,
                               "score": float(score)})
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "annotations": annotations,
                       "categories": [{"id": c} for c in range(1, 4)]}
    coco_gt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return 100 * coco_eval.stats[:6]


def test_mask_ap_matches_cocoeval_on_dense_masks():
    cases = [random_instance_case(seed) for seed in range(12)]
    metric = MaskAP(num_labels=3)
    for case in cases:
        metric.update(*(torch.from_numpy(np.asarray(x)) for x in case))
    results = metric.compute(per_class=True)
    expected = cocoeval_directly(cases)
    assert all(0 < value < 100 for value in expected[:3])  # a non-trivial case: neither perfect nor empty
    np.testing.assert_allclose(
        [results[k] for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")], expected, atol=1e-9
    )
    assert set(results["per_class_ap"]) == {"0", "1", "2"}
    assert np.mean(list(results["per_class_ap"].values())) == pytest.approx(results["ap"])


def test_mask_ap_perfect_prediction_is_100_and_empty_cases():
    _, _, _, masks, labels, _ = random_instance_case(3)
    metric = MaskAP(id2label={0: "a", 1: "b", 2: "c"})
    metric.update(masks, np.linspace(1, 0.5, len(masks)), labels, masks, labels)
    results = metric.compute(per_class=True)
    assert results["ap"] == pytest.approx(100.0)
    assert results["ap50"] == pytest.approx(100.0)
    assert set(results["per_class_ap"]) == {metric.id2label[int(label)] for label in labels}

    nothing_predicted = MaskAP()
    nothing_predicted.update(masks[:0], [], [], masks, labels)
    assert nothing_predicted.compute()["ap"] == 0.0
    nothing_annotated = MaskAP()
    nothing_annotated.update(masks, np.ones(len(masks)), labels, masks[:0], [])
    assert all(math.isnan(value) for value in nothing_annotated.compute().values())
    assert all(math.isnan(value) for value in MaskAP().compute().values())


def test_mask_ap_rejects_bad_input():
    masks = np.zeros((2, 8, 8), dtype=bool)
    metric = MaskAP(num_labels=2)
    with pytest.raises(ValueError, match="2 masks but 1 scores"):
        metric.update(masks, [0.5], [0, 1], masks, [0, 1])
    with pytest.raises(ValueError, match=r"pred_labels must lie in \[0, 2\)"):
        metric.update(masks, [0.5, 0.5], [0, 2], masks, [0, 1])
    with pytest.raises(ValueError, match="must match"):
        metric.update(masks, [0.5, 0.5], [0, 1], masks[:, :4], [0, 1])
    with pytest.raises(ValueError, match="binary"):
        encode_masks(np.full((1, 2, 2), 3))
    assert metric.images == []


# ----------------------------------------------------------------------------------------------------------------------
# Merging, memory, distributed
# ----------------------------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("name", sorted(METRICS))
def test_merging_two_accumulators_equals_one_on_all_images(name):
    metric_cls, kwargs, cases = METRICS[name]
    whole = filled(metric_cls, cases, **kwargs)
    first, second = filled(metric_cls, cases[::2], **kwargs), filled(metric_cls, cases[1::2], **kwargs)
    assert first.compute()[MAIN_RESULT[name]] != pytest.approx(whole.compute()[MAIN_RESULT[name]])
    first.merge(second)
    assert_results_close(first.compute(per_class=True), whole.compute(per_class=True))
    first.reset()
    second.reset()
    first.merge(second)
    assert_results_close(first.compute(), metric_cls(**kwargs).compute())


def footprint(metric):
    """Shape of every tensor and length of every container the metric holds."""

    def size(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        return len(value) if isinstance(value, (list, tuple, dict)) else None

    return {key: size(value) for key, value in vars(metric).items()}


@pytest.mark.parametrize("name", ["panoptic_quality", "mean_iou"])
def test_state_size_does_not_grow_with_images(name):
    metric_cls, kwargs, cases = METRICS[name]
    metric = filled(metric_cls, cases[:1], **kwargs)
    before = footprint(metric)
    state_before = {key: tensor.clone() for key, tensor in metric.state_dict().items()}
    for case in cases * 10:
        metric.update(*case)
    assert footprint(metric) == before
    assert any(not torch.equal(state_before[key], tensor) for key, tensor in metric.state_dict().items())


def test_mask_ap_keeps_one_rle_per_mask_and_no_dense_mask():
    _, _, cases = METRICS["mask_ap"]
    metric = filled(MaskAP, cases * 5, num_labels=3)
    assert len(metric.images) == len(cases) * 5
    assert sum(len(image.predictions) for image in metric.images) == sum(len(case[0]) for case in cases) * 5
    assert sum(len(image.targets.rles) for image in metric.images) == sum(len(case[3]) for case in cases) * 5
    for image in metric.images:
        for side in (image.predictions, image.targets):
            assert all(isinstance(rle["counts"], str) for rle in side.rles)
            assert side.boxes.shape == (len(side), 4) and side.areas.shape == side.labels.shape == (len(side),)


def _distributed_worker(rank, world_size, rendezvous, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        results = {}
        for name, (metric_cls, kwargs, cases) in METRICS.items():
            metric = filled(metric_cls, cases[rank::world_size], **kwargs)
            results[name] = metric.compute(per_class=True)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
            json.dump(results, file)
    finally:
        dist.destroy_process_group()


def test_metrics_are_reduced_across_two_gloo_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, (metric_cls, kwargs, cases) in METRICS.items():
            assert_results_close(results[name], filled(metric_cls, cases, **kwargs).compute(per_class=True))


# ----------------------------------------------------------------------------------------------------------------------
# evaluate modules
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_panoptic_quality_evaluate_module_delegates_to_the_accumulator(offline):
    _, kwargs, cases = METRICS["panoptic_quality"]

    def prediction(pred, info):  # transformers' post-processing output: a tensor map, segments with a score
        return {"segmentation": torch.from_numpy(pred), "segments_info": [{**s, "score": 0.5} for s in info]}

    def reference(target, info):  # lists, "iscrowd" left out where it is 0
        segments = [s if s["iscrowd"] else {"id": s["id"], "category_id": s["category_id"]} for s in info]
        return {"segmentation": target.tolist(), "segments_info": segments}

    module = load_metric("panoptic_quality", keep_in_memory=True)
    *batched, last = cases
    for start in range(0, len(batched), 3):  # batches of up to three images, then one image alone
        batch = batched[start : start + 3]
        module.add_batch(predictions=[prediction(*case[:2]) for case in batch],
                         references=[reference(*case[2:]) for case in batch])
    module.add(prediction=prediction(*last[:2]), reference=reference(*last[2:]))
    results = module.compute(per_class=True, **kwargs)
    assert_results_close(results, filled(PanopticQuality, cases, **kwargs).compute(per_class=True))


def test_mean_iou_evaluate_module_delegates_to_the_accumulator(offline):
    _, kwargs, cases = METRICS["mean_iou"]
    module = load_metric("mean_iou", keep_in_memory=True)
    module.add_batch(predictions=[p for p, _ in cases[:4]], references=[t for _, t in cases[:4]])
    module.add_batch(predictions=[p for p, _ in cases[4:]], references=[t for _, t in cases[4:]])
    results = module.compute(per_class=True, **kwargs)
    assert_results_close(results, filled(MeanIoU, cases, **kwargs).compute(per_class=True))


def test_mask_ap_evaluate_module_takes_rles_and_delegates_to_the_accumulator(offline):
    _, kwargs, cases = METRICS["mask_ap"]
    module = load_metric("mask_ap", keep_in_memory=True)
    module.add_batch(
        predictions=[{"masks": encode_masks(m), "scores": s.tolist(), "labels": l.tolist()} for m, s, l, *_ in cases],
        references=[{"masks": encode_masks(m), "labels": l.tolist(), "iscrowd": c.tolist()} for *_, m, l, c in cases],
    )
    masks = cases[0][3]
    bytes_rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))  # bytes counts
    module.add(prediction={"masks": bytes_rles, "scores": [1.0] * len(masks), "labels": cases[0][4]},
               reference={"masks": bytes_rles, "labels": cases[0][4]})  # "iscrowd" left out: all 0
    results = module.compute(per_class=True, **kwargs)
    expected = filled(MaskAP, cases, **kwargs)
    expected.update(masks, np.ones(len(masks)), cases[0][4], masks, cases[0][4])
    assert_results_close(results, expected.compute(per_class=True))


def test_load_metric_names_the_known_modules():
    with pytest.raises(ValueError, match="unknown metric 'pq'"):
        load_metric("pq")
