"""Instance mask AP with pycocotools' `COCOeval(iouType="segm")`, accumulating run-length encodings only.

Each image keeps its masks as COCO RLEs (a few hundred bytes each instead of H x W) with their areas, boxes, scores
and labels; `compute` builds the COCO ground-truth and detection objects in memory and runs the official
evaluation (IoU 0.50:0.95, up to `max_detections` detections per image, COCO's small/medium/large area ranges).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from .base import label_names
from .distributed import all_gather_objects

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval

# pycocotools is imported where it is used: the losses and the other metrics import this package without it.

RLE = dict[str, Any]  # {"size": [H, W], "counts": str}
_SUMMARY_KEYS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")  # order of COCOeval.stats[:6]


def encode_masks(masks: Any) -> list[RLE]:
    """COCO RLEs of binary masks `(n, H, W)` (bool/0-1 tensor or array, any device), counts as `str`."""
    masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (n, H, W), got {masks.shape}")
    if masks.dtype != np.bool_ and not np.isin(masks, (0, 1)).all():
        raise ValueError(f"masks must be binary (bool or 0/1), got dtype {masks.dtype} with other values")
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))  # wants (H, W, n)
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


@dataclass
class EncodedInstances:
    """The instances of one image side (predictions or ground truth): `n` RLEs and per-instance arrays `(n,)`."""

    rles: list[RLE]
    labels: np.ndarray  # int64
    areas: np.ndarray  # float64, pixels
    boxes: np.ndarray  # (n, 4) float64, [x, y, width, height]
    scores: np.ndarray | None = None  # float64, predictions only
    iscrowd: np.ndarray | None = None  # int64, ground truth only

    def __len__(self) -> int:
        return len(self.rles)


@dataclass
class EncodedImage:
    """What `MaskAP` keeps of one image: its size and its encoded predictions and ground truth."""

    height: int
    width: int
    predictions: EncodedInstances
    targets: EncodedInstances


def _as_array(value: Any, dtype: type) -> np.ndarray:
    """A tensor, array or list as a flat numpy array of `dtype`."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value).reshape(-1).astype(dtype)


def _encoded_instances(
    rles: Sequence[RLE], labels: Any, name: str, scores: Any | None = None, iscrowd: Any | None = None
) -> EncodedInstances:
    """Checked `EncodedInstances` for one image side, with areas and boxes computed from the RLEs."""
    from pycocotools import mask as mask_utils

    rles = [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"]} for rle in rles]
    instances = EncodedInstances(
        rles=rles,
        labels=_as_array(labels, np.int64),
        areas=mask_utils.area(rles).astype(np.float64) if rles else np.zeros(0),
        boxes=mask_utils.toBbox(rles).astype(np.float64) if rles else np.zeros((0, 4)),
        scores=None if scores is None else _as_array(scores, np.float64),
        iscrowd=None if iscrowd is None else _as_array(iscrowd, np.int64),
    )
    for key in ("labels", "scores", "iscrowd"):
        values = getattr(instances, key)
        if values is not None and len(values) != len(rles):
            raise ValueError(f"{name}: {len(rles)} masks but {len(values)} {key}")
    return instances


def _coco_annotations(instances: EncodedInstances, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotation dicts of one image side, numbered from `first_id` (COCOeval reads id 0 as "unmatched")."""
    annotations = []
    for i in range(len(instances)):
        annotation = {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": int(instances.labels[i]),
            "segmentation": instances.rles[i],
            "area": float(instances.areas[i]),
            "bbox": instances.boxes[i].tolist(),
        }
        if instances.scores is not None:
            annotation["score"] = float(instances.scores[i])
        if instances.iscrowd is not None:
            annotation["iscrowd"] = int(instances.iscrowd[i])
        annotations.append(annotation)
    return annotations


class MaskAP:
    """Streaming COCO mask AP (percent): `ap`, `ap50`, `ap75`, `ap_small`, `ap_medium`, `ap_large`.

    Memory grows with the number of masks (one RLE each), never with their pixels.

    Args:
        num_labels: number of classes (labels `0 .. num_labels - 1`, checked on update); by default the classes
            are those seen in the ground truth and predictions.
        id2label: optional class names, used as keys of the per-class results.
        max_detections: highest-scoring detections per image that count (COCO: 100).
    """

    def __init__(
        self, num_labels: int | None = None, id2label: Mapping[int, str] | None = None, max_detections: int = 100
    ) -> None:
        self.num_labels = num_labels
        self.id2label = dict(id2label or {})
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.images: list[EncodedImage] = []

    def merge(self, other: MaskAP) -> None:
        """Add the images `other` has seen to this accumulator (what gathering over ranks does)."""
        if not isinstance(other, MaskAP):
            raise TypeError(f"cannot merge a {type(other).__name__} into a MaskAP")
        self.images.extend(other.images)

    def update(
        self,
        pred_masks: Any,
        pred_scores: Any,
        pred_labels: Any,
        target_masks: Any,
        target_labels: Any,
        target_iscrowd: Any | None = None,
    ) -> None:
        """Add one image: predicted masks `(n, H, W)` with scores and labels `(n,)`, ground-truth masks `(m, H, W)`
        with labels and optional crowd flags `(m,)` (tensors or arrays, any device). Only RLEs are kept."""
        pred_shape, target_shape = tuple(pred_masks.shape[-2:]), tuple(target_masks.shape[-2:])
        if pred_shape != target_shape:
            raise ValueError(f"pred_masks are {pred_shape} but target_masks are {target_shape}; they must match")
        pred_rles, target_rles = encode_masks(pred_masks), encode_masks(target_masks)
        self.update_encoded(pred_rles, pred_scores, pred_labels, target_rles, target_labels, target_iscrowd)

    def update_encoded(
        self,
        pred_rles: Sequence[RLE],
        pred_scores: Any,
        pred_labels: Any,
        target_rles: Sequence[RLE],
        target_labels: Any,
        target_iscrowd: Any | None = None,
    ) -> None:
        """`update` with masks already as COCO RLEs (`{"size": [H, W], "counts": str or bytes}`, see `encode_masks`)."""
        sizes = {tuple(int(s) for s in rle["size"]) for rle in [*pred_rles, *target_rles]}
        if len(sizes) > 1:
            raise ValueError(f"all masks of one image must have one size, got {sorted(sizes)}")
        if target_iscrowd is None:
            target_iscrowd = np.zeros(len(target_rles), dtype=np.int64)
        predictions = _encoded_instances(pred_rles, pred_labels, "predictions", scores=pred_scores)
        targets = _encoded_instances(target_rles, target_labels, "targets", iscrowd=target_iscrowd)
        if self.num_labels is not None:
            for name, labels in (("pred_labels", predictions.labels), ("target_labels", targets.labels)):
                if labels.size and (labels.min() < 0 or labels.max() >= self.num_labels):
                    raise ValueError(f"{name} must lie in [0, {self.num_labels}), got {sorted(set(labels.tolist()))}")
        height, width = sizes.pop() if sizes else (0, 0)
        self.images.append(EncodedImage(height, width, predictions, targets))

    def compute(self, per_class: bool = False) -> dict[str, Any]:
        """COCO mask AP in percent; NaN where COCOeval has nothing to average (no ground truth). With `per_class`,
        `"per_class_ap"` maps class names to AP (IoU 0.50:0.95, all areas). When distributed, every rank must call
        this: the images of all ranks are gathered first."""
        images = [image for rank_images in all_gather_objects(self.images) for image in rank_images]
        coco_eval = self._evaluate(images)
        results: dict[str, Any] = {
            key: float("nan") if value < 0 else 100 * float(value) for key, value in zip(_SUMMARY_KEYS, coco_eval.stats)
        }
        if per_class:
            precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recalls, classes), area all
            names = label_names(max(coco_eval.params.catIds, default=-1) + 1, self.id2label)
            results["per_class_ap"] = {}
            for k, label in enumerate(coco_eval.params.catIds):
                values = precision[:, :, k]
                valid = values[values > -1]
                results["per_class_ap"][names[label]] = 100 * float(valid.mean()) if valid.size else float("nan")
        return results

    def _evaluate(self, images: list[EncodedImage]) -> COCOeval:
        """Run COCOeval on `images` and return it after `summarize` (quietly)."""
        if self.num_labels is not None:
            labels = range(self.num_labels)
        else:
            labels = sorted({int(label) for image in images for side in (image.predictions, image.targets)
                             for label in side.labels})
        dataset = {
            "images": [
                {"id": image_id, "height": image.height, "width": image.width}
                for image_id, image in enumerate(images, start=1)
            ],
            "categories": [{"id": label} for label in labels],
        }
        ground_truth, detections = [], []
        for image_id, image in enumerate(images, start=1):
            ground_truth += _coco_annotations(image.targets, image_id, first_id=len(ground_truth) + 1)
            detections += _coco_annotations(image.predictions, image_id, first_id=len(detections) + 1)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {**dataset, "annotations": ground_truth}
            coco_dt.dataset = {**dataset, "annotations": detections}
            coco_gt.createIndex()
            coco_dt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="segm")
            coco_eval.params.maxDets = [1, 10, self.max_detections]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return coco_eval
