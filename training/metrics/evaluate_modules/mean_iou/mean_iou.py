"""Semantic segmentation mIoU, per-class IoU and pixel accuracy (percent) as an `evaluate` module.

`_compute` hands every image to `training.metrics.MeanIoU`; see there for the conventions.

Inputs, one element per image: `predictions` and `references` are (H, W) class-id maps (2-D sequences, tensors or
arrays). `compute` arguments: `num_labels` (int), `ignore_index` (default 255; -1 works too; None), optional
`id2label`, `absent_classes` ("exclude" or "zero") and `per_class` (add `per_class_iou`).

Example:

    >>> from training.metrics import load_metric
    >>> metric = load_metric("mean_iou")
    >>> metric.add_batch(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [1, 255]]])
    >>> metric.compute(num_labels=2)["mean_iou"]
    100.0
"""

import datasets
import evaluate

from training.metrics.mean_iou import MeanIoU as MeanIoUAccumulator

_MAP = datasets.List(datasets.List(datasets.Value("int64")))


class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean intersection over union of semantic segmentation maps, in percent.",
            citation="Everingham et al., The PASCAL Visual Object Classes (VOC) Challenge, IJCV 2010.",
            inputs_description=__doc__,
            features=datasets.Features({"predictions": _MAP, "references": _MAP}),
        )

    def _compute(
        self, predictions, references, num_labels, ignore_index=255, id2label=None, absent_classes="exclude",
        per_class=False,
    ):
        metric = MeanIoUAccumulator(
            num_labels, ignore_index=ignore_index, id2label=id2label, absent_classes=absent_classes
        )
        for prediction, reference in zip(predictions, references):
            metric.update(prediction, reference)
        return metric.compute(per_class=per_class)
