"""Streaming evaluation: original images -> image processor -> model -> post-processing -> metric update, one batch
at a time, so that memory does not grow with the number of images.

The pieces here know nothing of `Trainer`: `EoMTTrainer.evaluation_loop` (and through it `eomt evaluate`) puts them
together. Evaluation examples are those of `training.data.make_eval_dataset` (images and ground truth at original
resolution, batched as lists by `collate_eval`); the image processor owns the geometry (longest-side resize + pad for
panoptic / instance, shortest-side resize + sliding windows for semantic with `do_split_image`) and its
post-processing maps the predictions back to the original sizes.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets.distributed import split_dataset_by_node
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from .annealing import unwrap_model
from .data.base import DatasetInfo
from .data.pipeline import EvalDataset, StreamingDataset, collate_eval
from .metrics import MaskAP, MeanIoU, PanopticQuality
from .metrics.base import TensorStateMetric

# Inference settings of the authors' evaluation: panoptic keeps queries whose class score is above 0.8 and segments
# that keep more than 80% of their mask after overlaps are resolved (the processor's `threshold` and
# `overlap_mask_area_threshold`, which `eomt train` may choose: `choose_postprocessing`); mask AP scores every
# non-empty query mask (COCO keeps the 100 best per image).
PANOPTIC_POSTPROCESS = {"threshold": 0.8, "overlap_mask_area_threshold": 0.8}
INSTANCE_POSTPROCESS = {"threshold": 0.0}
# Class-score thresholds at which panoptic evaluation also reports PQ (`pq@0.5`, ...), from the same forward passes:
# how far the PQ at the default threshold depends on the calibration of the class scores.
SWEEP_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# Mask-overlap thresholds that `eomt train`'s final evaluation also sweeps (`SegmentationEvaluator.sweep_overlaps`).
SWEEP_OVERLAPS = (0.4, 0.6, 0.8)
# `choose_postprocessing` leaves the highest settings of the sweep only for more than this much PQ (points).
CALIBRATION_MARGIN = 0.5


def is_evaluation_dataset(dataset: Any) -> bool:
    """Whether `dataset` yields evaluation examples (original images + ground truth), as `make_eval_dataset` builds."""
    return isinstance(dataset, EvalDataset) or (isinstance(dataset, StreamingDataset) and dataset.augmentation is None)


class ShardSampler(Sampler[int]):
    """Indices `rank, rank + world_size, ...` of a data set of `size` examples: every example goes to exactly one
    process (no padding, no repeats, so no image is counted twice; the last shards may be one shorter)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.size, self.rank, self.world_size = size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


def evaluation_dataloader(
    dataset: EvalDataset | StreamingDataset,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    **dataloader_kwargs: Any,
) -> DataLoader:
    """A `DataLoader` over this process's share of `dataset` (disjoint across processes), batched by `collate_eval`."""
    if isinstance(dataset, StreamingDataset):
        if world_size > 1:
            source = copy.copy(dataset.source)
            source.records = split_dataset_by_node(source.records, rank, world_size)
            dataset = StreamingDataset(source, seed=dataset.seed)
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_eval, **dataloader_kwargs)
    sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_eval, **dataloader_kwargs)


@contextlib.contextmanager
def inference_attention(model: nn.Module, masked: bool = False) -> Iterator[None]:
    """Run `model` mask-free (all `attn_mask_probs` 0, as after mask annealing) or, with `masked`, with masked
    attention in every masked block (all 1); the probabilities are restored afterwards."""
    model = unwrap_model(model)
    saved = model.attn_mask_probs.detach().clone()
    _set_attn_mask_probs(model, 1.0 if masked else 0.0)
    try:
        yield
    finally:
        _set_attn_mask_probs(model, saved)


def _set_attn_mask_probs(model: nn.Module, probs: float | Tensor) -> None:
    """Ours through its setter; transformers' `EomtForUniversalSegmentation` (the benchmarks' reference) has only the
    buffer."""
    if hasattr(model, "set_attn_mask_probs"):
        model.set_attn_mask_probs(probs)
    else:
        with torch.no_grad():
            model.attn_mask_probs.copy_(torch.as_tensor(probs, dtype=model.attn_mask_probs.dtype))


class ClassScores(TensorStateMetric):
    """How confident the predictions of each class are: over all queries of all images, the queries whose best class
    (the argmax, "no object" included) is class `c`, counted by score in `bins` equal bins of [0, 1] and above
    `threshold`. Sums over processes like the metrics."""

    _state_names = ("histogram", "above_threshold")

    def __init__(self, num_labels: int, threshold: float, bins: int = 20) -> None:
        self.num_labels, self.threshold, self.bins = num_labels, float(threshold), bins
        self.reset()

    def _empty_state(self) -> dict[str, Tensor]:
        return {
            "histogram": torch.zeros(self.num_labels, self.bins, dtype=torch.long),
            "above_threshold": torch.zeros(self.num_labels, dtype=torch.long),
        }

    def update(self, class_queries_logits: Tensor) -> None:
        """Add a batch of class logits `(B, Q, num_labels + 1)`."""
        scores, labels = class_queries_logits.float().softmax(-1).max(-1)  # (B, Q)
        scores, labels = scores.flatten().cpu(), labels.flatten().cpu()
        real = labels < self.num_labels
        scores, labels = scores[real], labels[real]
        bins = (scores * self.bins).long().clamp(max=self.bins - 1)
        self.histogram.view(-1).index_add_(0, labels * self.bins + bins, torch.ones_like(labels))
        self.above_threshold.index_add_(0, labels, (scores > self.threshold).long())

    def compute(self) -> dict[str, Any]:
        """Per class: `above_threshold` (queries predicting it with a score above the threshold) and `best_score`
        (the upper edge of the highest non-empty bin; 0 when no query predicts the class)."""
        state = self.reduced_state()
        filled = state["histogram"] > 0
        top = torch.where(filled, torch.arange(1, self.bins + 1), 0).amax(1)
        return {"above_threshold": state["above_threshold"].tolist(), "best_score": (top / self.bins).tolist()}


class SegmentationEvaluator:
    """Pre-processing, post-processing and the streaming metric of one task, for batches of evaluation examples.

    Args:
        info: the data set's task, classes (`thing_ids` for PQ) and `ignore_index` (semantic maps).
        processor: an `EoMTImageProcessor`; its settings decide the model input (`do_split_image` for sliding
            windows in semantic segmentation).
        postprocess_kwargs: extra arguments of the processor's post-processing (defaults: panoptic the processor's
            `threshold` and `overlap_mask_area_threshold`, else the authors' `PANOPTIC_POSTPROCESS`; instance
            `INSTANCE_POSTPROCESS`).
        sweep_thresholds: panoptic: the class-score thresholds at which PQ is also computed (post-processing the
            same outputs again; no extra forward pass).
        sweep_overlaps: panoptic: mask-overlap thresholds (`overlap_mask_area_threshold`) at which PQ is also
            computed, with every threshold of the sweep (in `calibration["sweep"]`).

    Metrics (percent): panoptic `pq`, `sq`, `rq` and their `_things` / `_stuff` averages at `threshold` and
    `overlap_mask_area_threshold` (both also metrics), and `pq@t`, `pq_things@t`, `pq_stuff@t` for every `t` of the
    sweep and the threshold itself; instance `ap`, `ap50`, `ap75`, `ap_small`, `ap_medium`, `ap_large`; semantic
    `miou` and `pixel_accuracy`.
    """

    def __init__(
        self,
        info: DatasetInfo,
        processor: Any,
        postprocess_kwargs: Mapping[str, Any] | None = None,
        sweep_thresholds: Sequence[float] = SWEEP_THRESHOLDS,
        sweep_overlaps: Sequence[float] = (),
    ) -> None:
        self.info, self.processor = info, processor
        self.task = info.task
        panoptic = {key: getattr(processor, key, value) for key, value in PANOPTIC_POSTPROCESS.items()}
        defaults = {"panoptic": panoptic, "instance": INSTANCE_POSTPROCESS, "semantic": {}}[self.task]
        self.postprocess_kwargs = {**defaults, **(postprocess_kwargs or {})}
        self.sweep: dict[tuple[float, float], PanopticQuality] = {}  # (threshold, overlap) -> its metric
        if self.task == "panoptic":
            self.postprocess_kwargs.setdefault("stuff_classes", list(info.stuff_ids))
            self.metric = PanopticQuality(info.num_labels, info.thing_ids, info.id2label)
            self.threshold = float(self.postprocess_kwargs["threshold"])
            self.overlap = float(self.postprocess_kwargs["overlap_mask_area_threshold"])
            settings = {(float(t), float(o)) for t in {*sweep_thresholds, self.threshold}
                        for o in {*sweep_overlaps, self.overlap}} - {(self.threshold, self.overlap)}  # fmt: skip
            self.sweep = {
                setting: PanopticQuality(info.num_labels, info.thing_ids, info.id2label) for setting in sorted(settings)
            }
            self.class_scores = ClassScores(info.num_labels, self.threshold)
        elif self.task == "instance":
            self.metric = MaskAP(info.num_labels, info.id2label)
        else:
            self.metric = MeanIoU(info.num_labels, ignore_index=info.ignore_index, id2label=info.id2label)

    def reset(self) -> None:
        self.metric.reset()
        for metric in self.sweep.values():
            metric.reset()
        if self.task == "panoptic":
            self.class_scores.reset()

    def add(self, outputs: Mapping[str, Any], original_sizes: Tensor, examples: Mapping[str, Sequence[Any]]) -> None:
        """Post-process the model `outputs` of a batch of evaluation `examples` and add them to the metric; panoptic:
        also to the metric of every setting of the sweep, and the class scores to `class_scores`."""
        self.update(self.postprocess(outputs, original_sizes), examples)
        if self.task != "panoptic":
            return
        self.class_scores.update(outputs["class_queries_logits"])
        for (threshold, overlap), metric in self.sweep.items():
            settings = {"threshold": threshold, "overlap_mask_area_threshold": overlap}
            self.update(self.postprocess(outputs, original_sizes, **settings), examples, metric)

    def preprocess(self, examples: Mapping[str, Sequence[Any]], with_targets: bool) -> dict[str, Any]:
        """Model inputs of a batch of evaluation examples: `pixel_values (N, 3, S, S)` (N = images, or windows),
        `original_sizes (B, 2)`, `patch_offsets` with windows and, `with_targets`, per row `mask_labels (n, S, S)` and
        `class_labels (n,)` of the non-crowd segments (what the loss compares with)."""
        targets = list(examples["target"]) if with_targets else None
        inputs = dict(self.processor(images=list(examples["image"]), segmentation_maps=targets, return_tensors="pt"))
        if with_targets:
            keep = [~crowd.bool() for crowd in inputs.pop("is_crowd")]
            inputs["mask_labels"] = [masks[k] for masks, k in zip(inputs["mask_labels"], keep)]
            inputs["class_labels"] = [labels[k] for labels, k in zip(inputs["class_labels"], keep)]
        return inputs

    def postprocess(self, outputs: Mapping[str, Any], original_sizes: Tensor, **overrides: Any) -> list[Any]:
        """Predictions at the original image sizes: panoptic / instance `{"segmentation", "segments_info"}` (instance
        with `(I, H, W)` binary masks), semantic `(H, W)` class maps. `overrides` replace post-processing arguments."""
        sizes = original_sizes.tolist()
        kwargs = {**self.postprocess_kwargs, **overrides}
        if self.task == "panoptic":
            return self.processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **kwargs)
        if self.task == "instance":
            return self.processor.post_process_instance_segmentation(
                outputs, target_sizes=sizes, return_binary_maps=True, **kwargs
            )
        return self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, **kwargs)

    def update(self, predictions: Sequence[Any], examples: Mapping[str, Sequence[Any]], metric: Any = None) -> None:
        """Add the post-processed `predictions` of a batch of evaluation `examples` to the metric (or to `metric`)."""
        metric = self.metric if metric is None else metric
        for index, prediction in enumerate(predictions):
            if self.task == "panoptic":
                metric.update(
                    prediction["segmentation"],
                    prediction["segments_info"],
                    examples["segmentation"][index],
                    examples["segments_info"][index],
                )
            elif self.task == "instance":
                target = examples["target"][index]
                scores = [segment["score"] for segment in prediction["segments_info"]]
                labels = [segment["label_id"] for segment in prediction["segments_info"]]
                metric.update(prediction["segmentation"], scores, labels, target.masks, target.labels, target.is_crowd)
            else:
                metric.update(prediction, examples["semantic_map"][index])

    def compute(self, per_class: bool = False) -> dict[str, Any]:
        """The metrics over every image seen by every process (call on all processes when distributed). Panoptic
        results also hold `calibration` (see `calibration`)."""
        results = self.metric.compute(per_class=per_class)
        if self.task == "semantic":
            results["miou"] = results.pop("mean_iou")
        if self.task == "panoptic":
            sweep = {setting: metric.compute() for setting, metric in self.sweep.items()}
            sweep[(self.threshold, self.overlap)] = results
            for threshold, overlap in sorted(sweep):
                if overlap == self.overlap:
                    for name in ("pq", "pq_things", "pq_stuff"):
                        results[f"{name}@{threshold:g}"] = sweep[threshold, overlap][name]
            results["threshold"], results["overlap_mask_area_threshold"] = self.threshold, self.overlap
            results["calibration"] = {
                **self.calibration(), "sweep": {f"{t:g}/{o:g}": sweep[t, o]["pq"] for t, o in sorted(sweep)}
            }
        return results

    def calibration(self) -> dict[str, Any]:
        """Panoptic: the threshold, per class the queries predicting it above the threshold and the best score
        (`ClassScores`), and `silent_things` / `silent_stuff`, the thing / stuff classes that no query predicts above
        the threshold although the ground truth holds them (their PQ is 0 at this threshold, whatever the masks).
        `compute` adds `sweep`: the PQ at every setting of the sweep, keyed `"threshold/overlap"`."""
        scores = self.class_scores.compute()
        names = self.metric.label_names
        state = self.metric.reduced_state()
        present = (state["true_positives"] + state["false_negatives"]) > 0
        silent = [label for label in range(len(names)) if present[label] and scores["above_threshold"][label] == 0]
        things = set(self.info.thing_ids)
        return {
            "threshold": self.threshold,
            "above_threshold": dict(zip(names, scores["above_threshold"])),
            "best_score": dict(zip(names, scores["best_score"])),
            "silent_things": [names[label] for label in silent if label in things],
            "silent_stuff": [names[label] for label in silent if label not in things],
        }


def calibration_warnings(calibration: Mapping[str, Any]) -> list[str]:
    """One message per thing or stuff class of `SegmentationEvaluator.calibration` that has no prediction above the
    threshold (none for an empty `calibration`: not a panoptic evaluation)."""
    threshold = calibration.get("threshold")
    return [
        f"{kind} class {name!r} has no prediction with a class score above the threshold {threshold:g} (best score "
        f"{calibration['best_score'][name]:.2f} or less), so its PQ is 0 at this threshold; see pq@... for lower "
        "thresholds, or train longer"
        for kind, key in (("thing", "silent_things"), ("stuff", "silent_stuff"))
        for name in calibration.get(key, ())
    ]


@dataclass(frozen=True)
class PostprocessingChoice:
    """The class-score and mask-overlap thresholds chosen for a model (`choose_postprocessing`), and why."""

    threshold: float
    overlap_mask_area_threshold: float
    reason: str


def choose_postprocessing(
    sweep: Mapping[str, float], current: tuple[float, float] | None = None, margin: float = CALIBRATION_MARGIN
) -> PostprocessingChoice | None:
    """The panoptic post-processing settings for a model from the PQ of its evaluation at every setting of a sweep
    (`calibration["sweep"]` of `SegmentationEvaluator.compute`, keyed `"threshold/overlap"`); None without a finite PQ.
    `current`: the settings the model had, named in the reason.

    Of the settings within `margin` PQ of the best, the highest threshold, then the highest overlap. The authors' 0.8 /
    0.8 assume the class scores of a long training and objects many mask pixels across; after a short run, whole
    classes can score just under 0.8 (measured: the stuff PQ of two of five classes was 0 at 0.8 on the learning
    benchmark's set C, their best scores 0.75 and 0.80), and the masks of things a few patches across lose more than a
    fifth of their area to their neighbours' (set B: PQ things 16.7 at overlap 0.8, 19.2 at 0.6). Lower settings keep
    more false positives, so they are taken only when they win by more than `margin`."""
    pq = {}
    for key, value in sweep.items():
        threshold, overlap = (float(part) for part in key.split("/"))
        if isinstance(value, (int, float)) and math.isfinite(value):
            pq[threshold, overlap] = float(value)
    if not pq:
        return None
    best = max(pq.values())
    chosen = max(setting for setting, value in pq.items() if value >= best - margin)
    reason = f"threshold {chosen[0]:g}, mask overlap {chosen[1]:g}: PQ {pq[chosen]:.1f} on the evaluation split"
    current = None if current is None else (float(current[0]), float(current[1]))
    if current in pq and chosen != current:
        reason += f" against {pq[current]:.1f} at {current[0]:g} / {current[1]:g}"
    reason += f" (the highest settings within {margin:g} PQ of the best, {best:.1f})"
    return PostprocessingChoice(chosen[0], chosen[1], reason)
