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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from datasets.distributed import split_dataset_by_node
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from .annealing import unwrap_model
from .data.base import DatasetInfo
from .data.pipeline import EvalDataset, StreamingDataset, collate_eval
from .metrics import MaskAP, MeanIoU, PanopticQuality

# Inference settings of the authors' evaluation: panoptic keeps queries whose class score is above 0.8 and segments
# that keep more than 80% of their mask after overlaps are resolved; mask AP scores every non-empty query mask (COCO
# keeps the 100 best per image).
PANOPTIC_POSTPROCESS = {"threshold": 0.8, "overlap_mask_area_threshold": 0.8}
INSTANCE_POSTPROCESS = {"threshold": 0.0}


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
    model.set_attn_mask_probs(1.0 if masked else 0.0)
    try:
        yield
    finally:
        model.set_attn_mask_probs(saved)


class SegmentationEvaluator:
    """Pre-processing, post-processing and the streaming metric of one task, for batches of evaluation examples.

    Args:
        info: the data set's task, classes (`thing_ids` for PQ) and `ignore_index` (semantic maps).
        processor: an `EoMTImageProcessor`; its settings decide the model input (`do_split_image` for sliding
            windows in semantic segmentation).
        postprocess_kwargs: extra arguments of the processor's post-processing (defaults: the authors'
            `PANOPTIC_POSTPROCESS` / `INSTANCE_POSTPROCESS`).

    Metrics (percent): panoptic `pq`, `sq`, `rq` and their `_things` / `_stuff` averages; instance `ap`, `ap50`, `ap75`,
    `ap_small`, `ap_medium`, `ap_large`; semantic `miou` and `pixel_accuracy`.
    """

    def __init__(self, info: DatasetInfo, processor: Any, postprocess_kwargs: Mapping[str, Any] | None = None) -> None:
        self.info, self.processor = info, processor
        self.task = info.task
        defaults = {"panoptic": PANOPTIC_POSTPROCESS, "instance": INSTANCE_POSTPROCESS, "semantic": {}}[self.task]
        self.postprocess_kwargs = {**defaults, **(postprocess_kwargs or {})}
        if self.task == "panoptic":
            self.postprocess_kwargs.setdefault("stuff_classes", list(info.stuff_ids))
            self.metric = PanopticQuality(info.num_labels, info.thing_ids, info.id2label)
        elif self.task == "instance":
            self.metric = MaskAP(info.num_labels, info.id2label)
        else:
            self.metric = MeanIoU(info.num_labels, ignore_index=info.ignore_index, id2label=info.id2label)

    def reset(self) -> None:
        self.metric.reset()

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

    def postprocess(self, outputs: Mapping[str, Any], original_sizes: Tensor) -> list[Any]:
        """Predictions at the original image sizes: panoptic / instance `{"segmentation", "segments_info"}` (instance
        with `(I, H, W)` binary masks), semantic `(H, W)` class maps."""
        sizes = original_sizes.tolist()
        if self.task == "panoptic":
            return self.processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **self.postprocess_kwargs)
        if self.task == "instance":
            return self.processor.post_process_instance_segmentation(
                outputs, target_sizes=sizes, return_binary_maps=True, **self.postprocess_kwargs
            )
        return self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, **self.postprocess_kwargs)

    def update(self, predictions: Sequence[Any], examples: Mapping[str, Sequence[Any]]) -> None:
        """Add the post-processed `predictions` of a batch of evaluation `examples` to the metric."""
        for index, prediction in enumerate(predictions):
            if self.task == "panoptic":
                self.metric.update(
                    prediction["segmentation"],
                    prediction["segments_info"],
                    examples["segmentation"][index],
                    examples["segments_info"][index],
                )
            elif self.task == "instance":
                target = examples["target"][index]
                scores = [segment["score"] for segment in prediction["segments_info"]]
                labels = [segment["label_id"] for segment in prediction["segments_info"]]
                self.metric.update(
                    prediction["segmentation"], scores, labels, target.masks, target.labels, target.is_crowd
                )
            else:
                self.metric.update(prediction, examples["semantic_map"][index])

    def compute(self, per_class: bool = False) -> dict[str, Any]:
        """The metrics over every image seen by every process (call on all processes when distributed)."""
        results = self.metric.compute(per_class=per_class)
        if self.task == "semantic":
            results["miou"] = results.pop("mean_iou")
        return results

