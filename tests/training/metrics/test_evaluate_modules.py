"""The metrics as `evaluate` modules (training.metrics.modules, training/metrics/evaluate_modules/): each delegates to
its accumulator."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tests.training.metrics.helpers import METRICS, assert_results_close, filled
from training.metrics import MaskAP, MeanIoU, PanopticQuality, encode_masks, load_metric


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
