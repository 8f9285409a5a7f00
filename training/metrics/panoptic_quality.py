"""Panoptic quality (PQ = SQ x RQ) as a streaming accumulator, with the COCO panoptic definition of panopticapi.

Per image, a predicted and a ground-truth segment of the same class match when their IoU is > 0.5, where the union
leaves out the predicted pixels that fall on unlabelled (void) ground truth. Matches are true positives (their IoU
is summed), unmatched ground-truth segments are false negatives unless they are crowd regions, and unmatched
predicted segments are false positives unless more than half of their pixels lie on void or on a crowd region of
their class. Per class, SQ = IoU sum / TP, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ x RQ; the averages (all, things,
stuff) are over the classes with at least one TP, FP or FN, as panopticapi's `pq_compute` does.

Two deliberate departures from panopticapi, neither of which changes COCO/ADE20K/Cityscapes results: predicted
segments listed in `segments_info` but absent from the map (zero pixels) are ignored instead of raising, and when
several crowd regions of one class exist in an image, all of them (not only the last listed) excuse predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import TensorStateMetric, as_index_tensor, label_names

VOID_IDS = (0, -1)


def segment_table(
    segments_info: Sequence[Mapping[str, Any]], num_labels: int, name: str, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Ids `(S,)`, labels `(S,)` and crowd flags `(S,)` of the segments listed in `segments_info`.

    The label is read from `"label_id"` (transformers' post-processing) or `"category_id"` (COCO); the crowd flag
    from `"iscrowd"` (default 0).
    """
    ids, labels, crowd = [], [], []
    for position, segment in enumerate(segments_info):
        if "id" not in segment:
            raise ValueError(f"{name}[{position}] has no 'id': {dict(segment)}")
        label_key = "label_id" if "label_id" in segment else "category_id"
        if label_key not in segment:
            raise ValueError(f"{name}[{position}] has neither 'label_id' nor 'category_id': {dict(segment)}")
        label = int(segment[label_key])
        if not 0 <= label < num_labels:
            raise ValueError(f"{name}[{position}] has {label_key} {label}, expected one in [0, {num_labels})")
        ids.append(int(segment["id"]))
        labels.append(label)
        crowd.append(bool(segment.get("iscrowd", 0)))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} lists a segment id more than once: {ids}")
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(labels, dtype=torch.long, device=device),
        torch.tensor(crowd, dtype=torch.bool, device=device),
    )


def _distinct_ids(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted candidate ids `(D,)` covering `flat` `(N,)` and each pixel's position among them `(N,)`.

    A range `lo..hi` when it is no longer than the map (one subtraction, no sort), else the distinct ids.
    """
    lo, hi = torch.aminmax(flat)
    lo, hi = lo.item(), hi.item()
    if hi - lo < flat.numel():
        return torch.arange(lo, hi + 1, device=flat.device), flat - lo if lo != 0 else flat
    return torch.unique(flat, return_inverse=True)


def pixel_segment_index(segmentation: Tensor, segment_ids: Tensor, void_ids: Tensor, name: str) -> Tensor:
    """Position in `segment_ids` `(S,)` of every pixel's segment `(H*W,)` int32; `S` for void pixels.

    A pixel is void when its id is not listed but is one of `void_ids`; any other unlisted id raises.
    """
    flat = segmentation.reshape(-1)
    if flat.numel() == 0:
        return flat.int()
    candidates, position = _distinct_ids(flat)  # (D,), (H*W,)
    # candidate -> segment position, S for void, -1 for unexplained; int32 halves the memory traffic downstream
    table = torch.full(candidates.shape, -1, dtype=torch.int32, device=flat.device)

    def mark(ids: Tensor, values: Tensor) -> None:
        slot = torch.searchsorted(candidates, ids).clamp_(max=candidates.numel() - 1)
        present = (candidates[slot] == ids) & (table[slot] < 0)  # listed ids come first and win over void ids
        table[slot[present]] = values[present]

    mark(segment_ids, torch.arange(segment_ids.numel(), dtype=torch.int32, device=flat.device))
    mark(void_ids, torch.full(void_ids.shape, segment_ids.numel(), dtype=torch.int32, device=flat.device))
    index = table.index_select(0, position)  # much faster than table[position] on the CPU
    if index.min() < 0:
        unknown = flat[index < 0].unique()[:10].tolist()
        raise ValueError(
            f"{name} holds segment ids {unknown} that are neither in its segments_info nor void ids "
            f"{void_ids.tolist()}"
        )
    return index


def panoptic_image_statistics(
    pred_index: Tensor,
    pred_labels: Tensor,
    target_index: Tensor,
    target_labels: Tensor,
    target_crowd: Tensor,
    num_labels: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class IoU sum, TP, FP and FN `(num_labels,)` of one image.

    `pred_index` / `target_index` `(H*W,)` give each pixel's segment position (`P` / `G` = void) for the `P` predicted
    segments with `pred_labels` `(P,)` and the `G` ground-truth ones with `target_labels` / `target_crowd` `(G,)`.
    """
    num_pred, num_target = pred_labels.numel(), target_labels.numel()
    joint = target_index * (num_pred + 1) + pred_index
    overlap = torch.bincount(joint, minlength=(num_target + 1) * (num_pred + 1)).reshape(num_target + 1, num_pred + 1)
    intersection = overlap[:num_target, :num_pred]  # (G, P)
    target_area = overlap[:num_target].sum(1)  # (G,)
    pred_area = overlap[:, :num_pred].sum(0)  # (P,)
    pred_on_void = overlap[num_target, :num_pred]  # (P,) predicted pixels on unlabelled ground truth

    union = target_area[:, None] + pred_area[None, :] - intersection - pred_on_void[None, :]  # (G, P)
    same_class = target_labels[:, None] == pred_labels[None, :]
    # IoU > 0.5 in integers (exact); it makes matches one-to-one since segments of one map do not overlap.
    matched = (2 * intersection > union) & same_class & ~target_crowd[:, None]
    iou = intersection.double() / union.clamp(min=1).double()
    matched_iou = torch.where(matched, iou, 0.0).sum(1)  # (G,)
    target_matched = matched.any(1)
    pred_matched = matched.any(0)

    crowd_overlap = (intersection * (same_class & target_crowd[:, None])).sum(0)  # (P,) on crowd of its class
    pred_excused = 2 * (pred_on_void + crowd_overlap) > pred_area
    false_positive = ~pred_matched & ~pred_excused & (pred_area > 0)
    false_negative = ~target_matched & ~target_crowd

    def per_class(labels: Tensor, values: Tensor) -> Tensor:
        return torch.zeros(num_labels, dtype=values.dtype, device=values.device).index_add_(0, labels, values)

    return (
        per_class(target_labels, matched_iou),
        per_class(target_labels, target_matched.long()),
        per_class(pred_labels, false_positive.long()),
        per_class(target_labels, false_negative.long()),
    )


class PanopticQuality(TensorStateMetric):
    """Streaming PQ / SQ / RQ (in percent) for all classes, things, stuff and per class.

    The state is four `(num_labels,)` tensors (IoU sum, TP, FP, FN) on the CPU, whatever the number of images.

    Args:
        num_labels: number of classes; labels are `0 .. num_labels - 1`.
        thing_ids: the labels that are things; every other label is stuff.
        id2label: optional class names, used as keys of the per-class results.
        void_ids: ids that mark unlabelled pixels in both maps when `segments_info` does not list them (0 in COCO
            panoptic PNGs, -1 in transformers' post-processing, which numbers its segments from 0).

    Example:
        >>> metric = PanopticQuality(num_labels=3, thing_ids=[2])
        >>> for prediction, target in zip(predictions, targets):  # one image at a time
        ...     metric.update(prediction["segmentation"], prediction["segments_info"],
        ...                   target["segmentation"], target["segments_info"])
        >>> metric.compute()["pq"]
    """

    _state_names = ("iou_sum", "true_positives", "false_positives", "false_negatives")

    def __init__(
        self,
        num_labels: int,
        thing_ids: Iterable[int],
        id2label: Mapping[int, str] | None = None,
        void_ids: Sequence[int] = VOID_IDS,
    ) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        thing_ids = sorted({int(label) for label in thing_ids})
        if thing_ids and not (0 <= thing_ids[0] and thing_ids[-1] < num_labels):
            raise ValueError(f"thing_ids must lie in [0, {num_labels}), got {thing_ids}")
        self.num_labels = num_labels
        self.is_thing = torch.zeros(num_labels, dtype=torch.bool)
        self.is_thing[thing_ids] = True
        self.label_names = label_names(num_labels, id2label)
        self.void_ids = torch.tensor(list(void_ids), dtype=torch.long)
        self.reset()

    def _empty_state(self) -> dict[str, Tensor]:
        return {
            "iou_sum": torch.zeros(self.num_labels, dtype=torch.float64),
            "true_positives": torch.zeros(self.num_labels, dtype=torch.long),
            "false_positives": torch.zeros(self.num_labels, dtype=torch.long),
            "false_negatives": torch.zeros(self.num_labels, dtype=torch.long),
        }

    def update(
        self,
        pred_segmentation: Any,
        pred_segments_info: Sequence[Mapping[str, Any]],
        target_segmentation: Any,
        target_segments_info: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image: segment-id maps `(H, W)` (tensor or array, any device) with their segment lists.

        `pred_segments_info` is `[{"id", "label_id"}, ...]` (or `"category_id"`), `target_segments_info` is
        `[{"id", "category_id", "iscrowd"}, ...]`.
        """
        pred_map = as_index_tensor(pred_segmentation, "pred_segmentation")
        target_map = as_index_tensor(target_segmentation, "target_segmentation")
        if pred_map.shape != target_map.shape or pred_map.ndim != 2:
            raise ValueError(
                f"pred_segmentation and target_segmentation must be (H, W) maps of one size, got "
                f"{tuple(pred_map.shape)} and {tuple(target_map.shape)}"
            )
        device = target_map.device
        pred_map = pred_map.to(device)
        void_ids = self.void_ids.to(device)
        pred_ids, pred_labels, _ = segment_table(pred_segments_info, self.num_labels, "pred_segments_info", device)
        target_ids, target_labels, target_crowd = segment_table(
            target_segments_info, self.num_labels, "target_segments_info", device
        )
        statistics = panoptic_image_statistics(
            pixel_segment_index(pred_map, pred_ids, void_ids, "pred_segmentation"),
            pred_labels,
            pixel_segment_index(target_map, target_ids, void_ids, "target_segmentation"),
            target_labels,
            target_crowd,
            self.num_labels,
        )
        for state, value in zip(self.state_dict().values(), statistics):
            state += value.cpu()

    def compute(self, per_class: bool = False) -> dict[str, Any]:
        """PQ, SQ, RQ in percent: `pq`, `sq`, `rq` over all counted classes, then `*_things` and `*_stuff`.

        A group without any counted class gives NaN. With `per_class`, `"per_class"` maps each counted class name
        to its `pq`, `sq`, `rq` (percent) and `tp`, `fp`, `fn` counts. Sums over ranks first when distributed.
        """
        state = self.reduced_state()
        iou_sum, tp = state["iou_sum"], state["true_positives"].double()
        fp, fn = state["false_positives"].double(), state["false_negatives"].double()
        counted = (tp + fp + fn) > 0
        weighted_count = (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12)
        quality = {
            "pq": 100 * iou_sum / weighted_count,
            "sq": 100 * torch.where(tp > 0, iou_sum / tp.clamp(min=1), 0.0),
            "rq": 100 * tp / weighted_count,
        }
        results: dict[str, Any] = {}
        for suffix, group in (("", torch.ones_like(counted)), ("_things", self.is_thing), ("_stuff", ~self.is_thing)):
            selected = counted & group
            for name, values in quality.items():
                results[name + suffix] = values[selected].mean().item() if selected.any() else float("nan")
        if per_class:
            results["per_class"] = {
                self.label_names[label]: {
                    **{name: values[label].item() for name, values in quality.items()},
                    "tp": int(tp[label]),
                    "fp": int(fp[label]),
                    "fn": int(fn[label]),
                }
                for label in counted.nonzero().flatten().tolist()
            }
        return results
