"""Mask AP (training.metrics.mask_ap) against COCOeval on each mask encoded on its own; its memory (one RLE per mask)."""

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.training.metrics.helpers import METRICS, filled, random_instance_case
from training.metrics import MaskAP, encode_masks


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
