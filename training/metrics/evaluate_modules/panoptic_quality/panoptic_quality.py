"""Panoptic quality (PQ, SQ, RQ in percent, COCO panoptic definition) as an `evaluate` module.

`_compute` hands every image to `training.metrics.PanopticQuality`; see there for the definition.

Inputs, one element per image (segmentations as 2-D sequences, tensors or arrays of segment ids):

    predictions: {"segmentation": (H, W) ids, "segments_info": [{"id": int, "label_id": int}, ...]}
        (what transformers' `post_process_panoptic_segmentation` returns for one image)
    references:  {"segmentation": (H, W) ids, "segments_info": [{"id": int, "category_id": int, "iscrowd": 0/1}, ...]}

Segment labels may come as "label_id" or "category_id", "iscrowd" may be left out (0), other keys ("score", ...)
are dropped and maps of whole numbers in a float dtype made integer by `add` / `add_batch`.

`compute` arguments: `num_labels` (int), `thing_ids` (labels that are things), optional `id2label`, `void_ids`
(default (0, -1)) and `per_class` (add per-class results).

Example:

    >>> from training.metrics import load_metric
    >>> metric = load_metric("panoptic_quality")
    >>> metric.add_batch(predictions=[{"segmentation": [[0, 0], [1, 1]], "segments_info": [
    ...     {"id": 0, "label_id": 0}, {"id": 1, "label_id": 1}]}],
    ...     references=[{"segmentation": [[1, 1], [2, 2]], "segments_info": [
    ...     {"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]}])
    >>> metric.compute(num_labels=2, thing_ids=[1])["pq"]
    100.0
"""

import datasets
import evaluate

from training.metrics.base import as_index_tensor
from training.metrics.panoptic_quality import VOID_IDS
from training.metrics.panoptic_quality import PanopticQuality as PanopticQualityAccumulator

_SEGMENTATION = datasets.List(datasets.List(datasets.Value("int64")))
_ID = datasets.Value("int64")


def _segments(segments_info, label_key, keep_crowd):
    """`segments_info` reduced to the keys of the features: id, the label under `label_key` and maybe iscrowd."""
    segments = []
    for segment in segments_info:
        kept = {"id": segment["id"], label_key: segment.get("label_id", segment.get("category_id"))}
        if keep_crowd:
            kept["iscrowd"] = segment.get("iscrowd", 0)
        segments.append(kept)
    return segments


def _image(example, label_key, keep_crowd):
    """One image as the features want it: an int64 CPU map (float maps of whole numbers are accepted)."""
    return {
        "segmentation": as_index_tensor(example["segmentation"], "segmentation").cpu(),
        "segments_info": _segments(example["segments_info"], label_key, keep_crowd),
    }


def _batch_of(example):
    return None if example is None else [example]


class PanopticQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Panoptic quality PQ = SQ x RQ (COCO panoptic definition), all / things / stuff, in percent.",
            citation="Kirillov et al., Panoptic Segmentation, CVPR 2019.",
            inputs_description=__doc__,
            features=datasets.Features({
                "predictions": {
                    "segmentation": _SEGMENTATION,
                    "segments_info": datasets.List({"id": _ID, "label_id": _ID}),
                },
                "references": {
                    "segmentation": _SEGMENTATION,
                    "segments_info": datasets.List({"id": _ID, "category_id": _ID, "iscrowd": _ID}),
                },
            }),
            reference_urls=["https://github.com/cocodataset/panopticapi"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (segments_info reduced to the keys above first).\n"""
        if predictions is not None:
            predictions = [_image(example, "label_id", keep_crowd=False) for example in predictions]
        if references is not None:
            references = [_image(example, "category_id", keep_crowd=True) for example in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (normalised like `add_batch`).\n"""
        self.add_batch(predictions=_batch_of(prediction), references=_batch_of(reference), **kwargs)

    def _compute(
        self, predictions, references, num_labels, thing_ids, id2label=None, void_ids=VOID_IDS, per_class=False
    ):
        metric = PanopticQualityAccumulator(num_labels, thing_ids, id2label=id2label, void_ids=void_ids)
        for prediction, reference in zip(predictions, references):
            metric.update(
                prediction["segmentation"], prediction["segments_info"],
                reference["segmentation"], reference["segments_info"],
            )
        return metric.compute(per_class=per_class)
