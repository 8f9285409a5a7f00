"""Mean IoU for semantic segmentation as a streaming accumulator over a `(K, K)` confusion matrix.

Per class, IoU = TP / (TP + FP + FN) over all pixels seen. The mean is over the classes that occur in the ground
truth or the predictions (`absent_classes="exclude"`, the default, as mmsegmentation and the `mean_iou` evaluate
module do). The authors' code (torchmetrics `MulticlassJaccardIndex(average=None)` followed by `.mean()`) counts
absent classes as IoU 0 instead: `absent_classes="zero"` reproduces that. Both agree whenever every class occurs,
as on the full ADE20K and Cityscapes validation sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .base import TensorStateMetric, as_index_tensor, label_names


def confusion_matrix(pred: Tensor, target: Tensor, num_labels: int, ignore_index: int | None) -> Tensor:
    """`(K, K)` pixel counts, rows = ground-truth class, columns = predicted class; `ignore_index` pixels skipped."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    for name, values in (("target", target), ("pred", pred)):
        lo, hi = torch.aminmax(torch.where(keep, values, 0)) if values.numel() else (0, 0)
        if lo < 0 or hi >= num_labels:
            bad = values[keep & ((values < 0) | (values >= num_labels))].unique()[:10].tolist()
            allowed = f"[0, {num_labels})"
            if ignore_index is not None and name == "target":
                allowed += f" or {ignore_index}"
            raise ValueError(f"{name} holds class ids {bad}, expected ids in {allowed}")
    joint = torch.where(keep, target * num_labels + pred, num_labels * num_labels)  # ignored pixels: one extra bin
    counts = torch.bincount(joint, minlength=num_labels * num_labels + 1)
    return counts[:-1].reshape(num_labels, num_labels)


class MeanIoU(TensorStateMetric):
    """Streaming mIoU, per-class IoU and pixel accuracy (percent); the state is one `(K, K)` int64 matrix on the CPU.

    Args:
        num_labels: number of classes `K`; class ids are `0 .. K - 1`.
        ignore_index: ground-truth value of pixels to skip (255 by default; -1 works too; `None` skips nothing).
        id2label: optional class names, used as keys of the per-class results.
        absent_classes: `"exclude"` leaves classes absent from both ground truth and predictions out of the mean;
            `"zero"` counts them as IoU 0 like the authors' evaluation.
    """

    _state_names = ("confusion",)

    def __init__(
        self,
        num_labels: int,
        ignore_index: int | None = 255,
        id2label: Mapping[int, str] | None = None,
        absent_classes: Literal["exclude", "zero"] = "exclude",
    ) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        if absent_classes not in ("exclude", "zero"):
            raise ValueError(f"absent_classes must be 'exclude' or 'zero', got {absent_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_labels:
            raise ValueError(f"ignore_index {ignore_index} is a class id (num_labels={num_labels})")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.absent_classes = absent_classes
        self.label_names = label_names(num_labels, id2label)
        self.reset()

    def _empty_state(self) -> dict[str, Tensor]:
        return {"confusion": torch.zeros(self.num_labels, self.num_labels, dtype=torch.long)}

    def update(self, pred: Any, target: Any) -> None:
        """Add class-id maps of one image `(H, W)` or a batch `(B, H, W)` (tensors or arrays, any device)."""
        pred = as_index_tensor(pred, "pred")
        target = as_index_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        self.confusion += confusion_matrix(pred.to(target.device), target, self.num_labels, self.ignore_index).cpu()

    def compute(self, per_class: bool = False) -> dict[str, Any]:
        """`mean_iou` and `pixel_accuracy` in percent (NaN before any labelled pixel); with `per_class`,
        `"per_class_iou"` maps every class name to its IoU (NaN for classes absent from both maps).
        Sums over ranks first when distributed."""
        confusion = self.reduced_state()["confusion"].double()
        true_positives = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - true_positives
        iou = 100 * true_positives / union  # NaN where the class is absent from both
        present = union > 0
        if self.absent_classes == "zero":
            mean_iou = torch.where(present, iou, 0.0).mean()
        else:
            mean_iou = iou[present].mean() if present.any() else torch.tensor(float("nan"))
        total = confusion.sum()
        results: dict[str, Any] = {
            "mean_iou": mean_iou.item(),
            "pixel_accuracy": (100 * true_positives.sum() / total).item() if total > 0 else float("nan"),
        }
        if per_class:
            results["per_class_iou"] = dict(zip(self.label_names, iou.tolist()))
        return results
