"""COCO instance mask AP (pycocotools `COCOeval`, iouType "segm") in percent as an `evaluate` module.

`_compute` hands every image to `training.metrics.MaskAP`. Masks travel as COCO run-length encodings, made with
`training.metrics.encode_masks(masks)` from binary masks `(n, H, W)`: `{"size": [H, W], "counts": str}`.

Inputs, one element per image:

    predictions: {"masks": [RLE, ...], "scores": [float, ...], "labels": [int, ...]}
    references:  {"masks": [RLE, ...], "labels": [int, ...], "iscrowd": [0/1, ...]}

References may leave "iscrowd" out (all 0), and RLE counts may be `bytes` (as `pycocotools.mask.encode` gives).

`compute` arguments: optional `num_labels`, `id2label`, `max_detections` (default 100) and `per_class` (add
`per_class_ap`).

Example:

    >>> import torch
    >>> from training.metrics import encode_masks, load_metric
    >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool); masks[0, :4] = True
    >>> metric = load_metric("mask_ap")
    >>> metric.add_batch(predictions=[{"masks": encode_masks(masks), "scores": [0.9], "labels": [0]}],
    ...                  references=[{"masks": encode_masks(masks), "labels": [0], "iscrowd": [0]}])
    >>> round(metric.compute()["ap"], 6)
    100.0
"""

import datasets
import evaluate

from training.metrics.mask_ap import MaskAP as MaskAPAccumulator

_RLES = datasets.List({"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")})
_INTS = datasets.List(datasets.Value("int64"))


def _rles(rles):
    """RLEs with `str` counts, as the features store them."""
    return [
        {**rle, "counts": rle["counts"].decode("ascii")} if isinstance(rle["counts"], bytes) else rle for rle in rles
    ]


def _batch_of(example):
    return None if example is None else [example]


class MaskAP(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="COCO instance segmentation mask AP, AP50, AP75, AP small/medium/large, in percent.",
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=__doc__,
            features=datasets.Features({
                "predictions": {"masks": _RLES, "scores": datasets.List(datasets.Value("float64")), "labels": _INTS},
                "references": {"masks": _RLES, "labels": _INTS, "iscrowd": _INTS},
            }),
            reference_urls=["https://github.com/cocodataset/cocoapi"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (counts made `str`, missing "iscrowd" filled with 0 first).\n"""
        if predictions is not None:
            predictions = [{**example, "masks": _rles(example["masks"])} for example in predictions]
        if references is not None:
            references = [
                {"masks": _rles(example["masks"]), "labels": example["labels"],
                 "iscrowd": example.get("iscrowd", [0] * len(example["masks"]))}
                for example in references
            ]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (normalised like `add_batch`).\n"""
        self.add_batch(predictions=_batch_of(prediction), references=_batch_of(reference), **kwargs)

    def _compute(self, predictions, references, num_labels=None, id2label=None, max_detections=100, per_class=False):
        metric = MaskAPAccumulator(num_labels, id2label=id2label, max_detections=max_detections)
        for prediction, reference in zip(predictions, references):
            metric.update_encoded(
                prediction["masks"], prediction["scores"], prediction["labels"],
                reference["masks"], reference["labels"], reference["iscrowd"],
            )
        return metric.compute(per_class=per_class)
