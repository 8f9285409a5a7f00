"""Data sets, readers and generators for EoMT training and evaluation.

Readers return a `SegmentationSource` (map-style, lazily decoded `Sample`s with `info: DatasetInfo`):
`load_coco_panoptic`, `load_coco_instance`, `load_ade20k`, `load_cityscapes`, `load_semantic_folder`,
`from_hf_dataset`, or `load_source` (layout detected). `validate_dataset` checks one before training.
`make_train_dataset` / `make_eval_dataset` build what the trainer consumes.
"""

from .augmentation import AugmentationConfig, augment, recipe_augmentation, sample_rng
from .base import DatasetInfo, Sample, SampleError, SegmentationSource
from .coco import load_coco_instance, load_coco_panoptic
from .hub import from_hf_dataset
from .pipeline import (
    EpochCallback,
    EvalDataset,
    StreamingDataset,
    TrainDataset,
    collate_eval,
    detect_format,
    load_source,
    make_eval_dataset,
    make_train_dataset,
)
from .semantic import load_ade20k, load_cityscapes, load_semantic_folder
from .synthetic import (
    CLASS_NAMES,
    synthetic_scene,
    write_synthetic_ade20k,
    write_synthetic_coco_instance,
    write_synthetic_coco_panoptic,
)
from .validation import DatasetValidationError, ValidationReport, validate_dataset

__all__ = [
    "AugmentationConfig",
    "CLASS_NAMES",
    "DatasetInfo",
    "DatasetValidationError",
    "EpochCallback",
    "EvalDataset",
    "Sample",
    "SampleError",
    "SegmentationSource",
    "StreamingDataset",
    "TrainDataset",
    "ValidationReport",
    "augment",
    "collate_eval",
    "detect_format",
    "from_hf_dataset",
    "load_ade20k",
    "load_cityscapes",
    "load_coco_instance",
    "load_coco_panoptic",
    "load_semantic_folder",
    "load_source",
    "make_eval_dataset",
    "make_train_dataset",
    "recipe_augmentation",
    "sample_rng",
    "synthetic_scene",
    "validate_dataset",
    "write_synthetic_ade20k",
    "write_synthetic_coco_instance",
    "write_synthetic_coco_panoptic",
]
