"""The settings of a training run (`eomt train`), with the authors' recipe as defaults; light to import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The authors' input size and number of queries per task (COCO panoptic / instance, ADE20K semantic).
TASK_DEFAULTS = {
    "panoptic": {"image_size": 640, "num_queries": 200},
    "instance": {"image_size": 640, "num_queries": 200},
    "semantic": {"image_size": 512, "num_queries": 100},
}

# `auto`: the authors' recipe for a pre-trained start (--backbone, --checkpoint), the from-scratch one for --model.
RECIPES = ("auto", "authors", "scratch")


@dataclass
class TrainSettings:
    """Everything `eomt train` can set. Recipe fields left at None are chosen by `training.recipe.choose_recipe` for
    the start point (a pre-trained `backbone` or a `checkpoint`: the authors' recipe; random weights: a from-scratch
    recipe) and the data (the augmentation scale from its image and object sizes); `eomt train` prints what it chose
    and why.

    Data: `data` (a folder in one of the layouts of `training.data.load_source`, or with `format="hub"` a `datasets`
    data set name or folder), `format` and `task` (detected when None), `train_split`, `eval_split` (None: no
    evaluation; `val` and `validation` name the same split), `hub_options` (columns, `id2label`, ... of a `datasets`
    data set: see `training.data.hub.load_hub_source`).
    Model, exactly one of: `size` (`S`, `B`, `L`, `g`: DINOv2 shapes, random weights), `backbone` (a DINOv2 / DINOv3
    checkpoint directory or Hub id; new queries and heads), `checkpoint` (an EoMT checkpoint; with another number of
    classes than the data set, `reinitialize_heads` must be set). `model_config` overrides `EoMTConfig` fields of new
    models; `image_size` (default: the checkpoint's, else 640 / 512 for semantic), `num_queries` (200 / 100) and
    `num_blocks` (4) apply to new models (`image_size` also to the training crops and the processor).
    Recipe: `recipe` (`auto`: by start point, `authors` or `scratch` to force one); `learning_rate`, `layer_decay`,
    `max_grad_norm`, `head_warmup_steps`, `backbone_warmup_steps` (see `EoMTTrainer`), `augmentation_scale` (the
    large-scale-jitter range) and `color_jitter` (see `AugmentationConfig`), `num_points` and `no_object_weight` (see
    `MaskClassificationLoss`; None: the model config's); `max_steps` wins over `epochs`; `annealing_*` as in
    `MaskAnnealingCallback` (None: the paper's schedule over the run).
    Evaluation: `eval_masked_attention` (see `EoMTTrainer`), `eval_threshold` (class-score threshold of panoptic /
    instance evaluation, saved as the processor's `threshold`; None: instance 0; panoptic the authors' 0.8 during
    training, then the saved processor gets the class-score and mask-overlap thresholds that
    `training.evaluation.choose_postprocessing` picks from the final evaluation's sweep, and the final metrics are
    those at them).
    Run: `eval_steps` (None: evaluate at the end only), `save_steps`, `save_total_limit`, `logging_steps`, `resume`
    (continue from the last checkpoint in `output_dir`), `report_to`, `use_cpu`, `progress` (tqdm bars).
    Safety: `validation` (`"fast"`, `"full"` or `"skip"`: the data check before training, see
    `training.data.validate_dataset`), `overwrite` (replace a model already in `output_dir`), `max_nonfinite_steps`
    (stop after this many consecutive steps with a NaN / infinite loss or gradient; each is skipped).
    """

    data: str
    output_dir: str
    format: str | None = None
    task: str | None = None
    train_split: str = "train"
    eval_split: str | None = "val"
    hub_options: dict[str, Any] = field(default_factory=dict)
    size: str | None = None
    backbone: str | None = None
    checkpoint: str | None = None
    reinitialize_heads: bool = False
    model_config: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    num_queries: int | None = None
    num_blocks: int | None = None
    recipe: str = "auto"
    learning_rate: float | None = None
    layer_decay: float | None = None
    weight_decay: float = 0.05
    max_grad_norm: float | None = None
    augmentation_scale: tuple[float, float] | None = None
    color_jitter: bool | None = None
    num_points: int | None = None
    no_object_weight: float | None = None
    batch_size: int = 16
    eval_batch_size: int | None = None
    max_steps: int | None = None
    epochs: float = 12.0
    head_warmup_steps: int | None = None
    backbone_warmup_steps: int | None = None
    poly_power: float = 0.9
    annealing_power: float = 0.9
    annealing_start_steps: list[int] | None = None
    annealing_end_steps: list[int] | None = None
    gradient_accumulation_steps: int = 1
    bf16: bool = False
    gradient_checkpointing: bool = False
    workers: int = 2
    seed: int = 0
    eval_steps: int | None = None
    save_steps: int = 1000
    save_total_limit: int | None = 2
    logging_steps: int = 50
    resume: bool = False
    eval_masked_attention: bool = False
    eval_threshold: float | None = None
    report_to: str = "none"
    use_cpu: bool = False
    progress: bool = True
    validation: str = "fast"
    overwrite: bool = False
    max_nonfinite_steps: int = 5

    def __post_init__(self) -> None:
        sources = [name for name in ("size", "backbone", "checkpoint") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError(
                "choose the model with exactly one of --model (size preset S/B/L/g), --backbone (DINOv2/DINOv3 "
                f"checkpoint) or --checkpoint (EoMT checkpoint); got {sources or 'none'}"
            )
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.augmentation_scale is not None:
            self.augmentation_scale = tuple(float(value) for value in self.augmentation_scale)
            low, high = self.augmentation_scale
            if not 0 < low <= high:
                raise ValueError(f"--augmentation-scale needs 0 < MIN <= MAX, got {low:g} {high:g}")
        if self.num_points is not None and self.num_points < 1:
            raise ValueError(f"--num-points must be positive, got {self.num_points}")
        if self.checkpoint is not None and (self.model_config or self.num_queries or self.num_blocks):
            raise ValueError("--model-config, --num-queries and --num-blocks shape new models; a --checkpoint keeps "
                             "its own")  # fmt: skip
