"""What `eomt train` and `eomt evaluate` do: data, model and processor set-up, `EoMTTrainer`, and the outputs.

`train(TrainSettings(...))` writes to `output_dir`: the checkpoints of the run (`checkpoint-*`, what `resume` continues
from), the final model and image processor (`save_pretrained`; `from_pretrained(output_dir)` and
`pipeline("image-segmentation", model=output_dir)` load them), `metrics.json` (final evaluation), `log_history.json`
and the curves `loss.png`, `annealing.png` (and `eval_metrics.png` with evaluations during training), and
`train_settings.json` (what `resume` checks, see `training.resume`).

Nothing is lost: files are written atomically; a model already in `output_dir` is only replaced with `overwrite`; a
run that stops part-way (an error, a diverged run, a failed final evaluation) raises a `RunError` naming what was
kept (the last checkpoint, or the final model, which is written before the final evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.checkpoints.io import write_text_atomically
from modeling_eomt.checkpoints.loading import check_finite
from modeling_eomt.loss_eomt import MaskClassificationLoss

from .allocator import keep_freed_memory
from .annealing import MaskAnnealingCallback
from .commands.arguments import RunError, user_message
from .curves import plot_training_curves
from .data import AugmentationConfig, DatasetInfo, load_source, make_eval_dataset, make_train_dataset
from .evaluation import SWEEP_OVERLAPS, choose_postprocessing
from .launch import check_process_group, launch_uses_cpu
from .nonfinite import parameters_are_finite
from .recipe import choose_recipe
from .resume import check_resumable, check_same_schedule, saved_model_files, write_run_settings
from .settings import TASK_DEFAULTS, TrainSettings
from .trainer import EoMTTrainer, recipe_training_arguments

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------------------------------


def new_model_config(settings: TrainSettings, info: DatasetInfo, image_size: int) -> dict[str, Any]:
    """Config fields of a new model (preset or backbone) for the data set `info`."""
    fields = {
        "num_queries": settings.num_queries or TASK_DEFAULTS[info.task]["num_queries"],
        "num_blocks": settings.num_blocks or 4,
        **settings.model_config,
    }
    fields.update(image_size=image_size, num_labels=info.num_labels, id2label=dict(info.id2label), label2id=info.label2id)
    fields["category_ids"] = None if info.category_ids is None else list(info.category_ids)
    return fields


def build_model(settings: TrainSettings, info: DatasetInfo, image_size: int) -> EoMTForUniversalSegmentation:
    """The model to train: a preset with random weights, a backbone with new heads, or an EoMT checkpoint."""
    torch.manual_seed(settings.seed)
    if settings.size is not None:
        return EoMTForUniversalSegmentation(EoMTConfig.from_size(settings.size, **new_model_config(settings, info, image_size)))
    if settings.backbone is not None:
        from modeling_eomt.checkpoints import init_from_backbone

        fields = new_model_config(settings, info, image_size)
        return init_from_backbone(EoMTForUniversalSegmentation, settings.backbone, **fields)
    config = EoMTConfig.from_pretrained(settings.checkpoint)
    if config.num_labels != info.num_labels:
        if not settings.reinitialize_heads:
            raise ValueError(
                f"{settings.checkpoint} predicts {config.num_labels} classes but {info.name} has {info.num_labels}: "
                "pass --reinitialize-heads to train new segmentation heads for the data set's classes"
            )
        model = EoMTForUniversalSegmentation.from_pretrained(
            settings.checkpoint, num_labels=info.num_labels, id2label=dict(info.id2label), label2id=info.label2id,
            reinitialize_heads=True,
        )  # fmt: skip
        check_finite(model, settings.checkpoint)
        return model
    model = EoMTForUniversalSegmentation.from_pretrained(settings.checkpoint, reinitialize_heads=settings.reinitialize_heads)
    check_finite(model, settings.checkpoint)
    names = [model.config.id2label.get(index) for index in range(info.num_labels)]
    if names != [info.id2label[index] for index in range(info.num_labels)]:
        logger.warning("%s names its classes %s, the data set %s; training with the data set's names",
                       settings.checkpoint, names, list(info.id2label.values()))  # fmt: skip
        model.config.id2label, model.config.label2id = dict(info.id2label), info.label2id
    return model


def build_processor(info: DatasetInfo, image_size: int, pretrained: str | None = None) -> EoMTImageProcessor:
    """The image processor for a data set: the one saved with `pretrained` if any, else the authors' set-up (square
    `image_size` input; sliding windows for semantic segmentation); classes and stuff classes from `info`."""
    processor = None
    if pretrained is not None:
        try:
            processor = EoMTImageProcessor.from_pretrained(pretrained)
            processor.size = {"shortest_edge": image_size, "longest_edge": image_size}
        except OSError:  # a checkpoint saved without its processor
            logger.info("%s has no image processor; using the default one", pretrained)
    if processor is None:
        processor = EoMTImageProcessor(size=image_size, do_split_image=info.task == "semantic")
    processor.num_labels = info.num_labels
    processor.stuff_classes = list(info.stuff_ids) if info.task == "panoptic" else None
    return processor


def _check_same_classes(train_info: DatasetInfo, eval_info: DatasetInfo) -> None:
    if train_info.id2label != eval_info.id2label or train_info.task != eval_info.task:
        raise ValueError(
            f"the training split ({train_info.task}, {train_info.num_labels} classes) and the evaluation split "
            f"({eval_info.task}, {eval_info.num_labels} classes) of the data set differ"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------------------------------


def train(settings: TrainSettings, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Validate the data, train, evaluate and write the outputs (see the module docstring); `callbacks` are added to
    the trainer's. Returns the final evaluation metrics (empty without an evaluation split)."""
    settings = dataclasses.replace(settings, use_cpu=launch_uses_cpu(settings.use_cpu))  # several CPU processes
    output_dir = Path(settings.output_dir)
    last_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if settings.resume and last_checkpoint is None:
        raise ValueError(f"--resume: no checkpoint-* folder in {output_dir} to continue from")
    if not settings.resume and last_checkpoint is not None:
        raise ValueError(f"{output_dir} already holds checkpoints: pass --resume to continue that run, or remove them "
                         "or choose another --out")  # fmt: skip
    _check_output_dir(settings, output_dir, last_checkpoint)

    source = load_source(settings.data, settings.train_split, settings.format, settings.task, **settings.hub_options)
    info = source.info
    image_size = resolve_image_size(settings, info)
    validate = settings.validation
    train_dataset = make_train_dataset(source, input_size=image_size, seed=settings.seed, validate=validate)
    eval_dataset = None
    if settings.eval_split is not None:
        eval_dataset = make_eval_dataset(settings.data, settings.eval_split, format=settings.format, task=info.task,
                                         validate=validate, **settings.hub_options)  # fmt: skip
        _check_same_classes(info, eval_dataset.info)
    model = build_model(settings, info, image_size)
    args = _training_arguments(settings, has_eval=eval_dataset is not None)
    recipe = choose_recipe(settings, source, image_size, model.config.patch_size, *_run_length(settings, args, train_dataset))
    if args.process_index == 0:
        print("\n".join(recipe.describe()), flush=True)
    args.learning_rate, args.max_grad_norm = recipe.learning_rate, recipe.max_grad_norm
    train_dataset.augmentation = AugmentationConfig(
        input_size=image_size, scale_range=recipe.augmentation_scale, color_jitter=recipe.color_jitter
    )
    losses = {"num_points": recipe.num_points, "no_object_weight": recipe.no_object_weight}
    record_provenance(model, settings, info)
    processor = build_processor(info, image_size, settings.checkpoint)
    if settings.eval_threshold is not None:
        processor.threshold = settings.eval_threshold  # the saved model's too
    calibrate = settings.eval_threshold is None and info.task == "panoptic"
    trainer = EoMTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        callbacks=list(callbacks),
        loss_fn=MaskClassificationLoss.from_config(model.config, **{k: v for k, v in losses.items() if v is not None}),
        layer_decay=recipe.layer_decay,
        head_warmup_steps=recipe.head_warmup_steps,
        backbone_warmup_steps=recipe.backbone_warmup_steps,
        poly_power=settings.poly_power,
        mask_annealing=MaskAnnealingCallback(
            settings.annealing_start_steps, settings.annealing_end_steps, power=settings.annealing_power
        ),
        eval_masked_attention=settings.eval_masked_attention,
        postprocess_kwargs=None if settings.eval_threshold is None else {"threshold": settings.eval_threshold},
        max_nonfinite_steps=settings.max_nonfinite_steps,
    )
    check_process_group(trainer.args)  # never several processes training alone into one folder
    if trainer.args.device.type == "cpu":
        keep_freed_memory()  # large activations reused step after step instead of mapped afresh
    if trainer.is_world_process_zero():
        write_json(output_dir / "recipe.json", {"name": recipe.name, "values": recipe.values, "reasons": recipe.reasons})
        if not settings.resume:
            write_run_settings(settings, output_dir)
    return _train_save_evaluate(trainer, output_dir, last_checkpoint if settings.resume else None, calibrate)


def _check_output_dir(settings: TrainSettings, output_dir: Path, last_checkpoint: str | None) -> None:
    """Refuse to replace a model in `output_dir` without `overwrite`; to resume, check the checkpoint and options."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--out {output_dir}: exists and is not a directory")
    held = saved_model_files(output_dir)
    if held and last_checkpoint is None and not settings.overwrite:
        raise ValueError(f"--out {output_dir}: already holds a model ({', '.join(held)}); pass --overwrite to replace "
                         "it, or choose another --out")  # fmt: skip
    if settings.resume:
        check_resumable(last_checkpoint)
        check_same_schedule(settings, output_dir, last_checkpoint)


def _train_save_evaluate(
    trainer: EoMTTrainer, output_dir: Path, resume_from: str | None, calibrate: bool = False
) -> dict[str, Any]:
    """Train, save the final model, then evaluate it (and, when `calibrate`, choose its post-processing: see
    `calibrate_postprocessing`); a `RunError` naming what was kept when one of them fails."""
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except Exception as error:
        raise RunError(f"training stopped at step {trainer.state.global_step}: {user_message(error)}; "
                       f"{_kept_checkpoint(output_dir)}") from error  # fmt: skip
    guard = trainer.nonfinite_guard
    if guard.stopped or not parameters_are_finite(trainer.model):
        _write_outputs(trainer, output_dir)
        raise RunError(guard.describe(trainer.state.global_step) if guard.stopped else "the trained weights hold NaN "
                       f"or infinite values, so the final model was not written; {_kept_checkpoint(output_dir)}")
    trainer.save_model(str(output_dir))  # model + processor, by the main process; before evaluating: nothing lost
    metrics = {}
    if trainer.eval_dataset is not None:
        try:
            if calibrate:
                trainer.sweep_overlaps = SWEEP_OVERLAPS  # the final evaluation only: more post-processing per image
            metrics = trainer.evaluate()
            if calibrate:
                metrics = calibrate_postprocessing(trainer, metrics, output_dir)
        except Exception as error:
            _write_outputs(trainer, output_dir)
            raise RunError(f"the final evaluation failed ({user_message(error)}); the trained model was written to "
                           f"{output_dir}") from error  # fmt: skip
        trainer.record_results(str(output_dir))  # the results into the saved model's config and model card
    _write_outputs(trainer, output_dir, metrics)
    return metrics


def calibrate_postprocessing(trainer: EoMTTrainer, metrics: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Give the processor saved in `output_dir` the class-score and mask-overlap thresholds that
    `choose_postprocessing` picks from the sweep of the evaluation that returned `metrics`
    (`eval_calibration["sweep"]`), and return the metrics at them: `metrics` when nothing moves, else those of a
    second evaluation (so that the metrics, the per-class tables and the model card describe the model as saved). The
    choice is recorded in `eval_calibration["chosen"]`."""
    sweep = trainer.eval_calibration.get("sweep", {})
    processor = trainer.processing_class
    current = (processor.threshold, processor.overlap_mask_area_threshold)
    choice = choose_postprocessing(sweep, current)
    trainer.sweep_overlaps = ()  # the grid is for this choice only: later evaluations skip it
    if choice is None:
        return metrics
    if trainer.is_world_process_zero():
        print(f"post-processing: {choice.reason}", flush=True)
    if (choice.threshold, choice.overlap_mask_area_threshold) != current:
        processor.threshold = choice.threshold
        processor.overlap_mask_area_threshold = choice.overlap_mask_area_threshold
        if trainer.is_world_process_zero():
            processor.save_pretrained(str(output_dir))
        metrics = trainer.evaluate()
    trainer.eval_calibration["chosen"] = {**dataclasses.asdict(choice), "sweep": sweep}
    return metrics


def _write_outputs(trainer: EoMTTrainer, output_dir: Path, metrics: dict[str, Any] | None = None) -> None:
    """`metrics.json` (unless `metrics` is None: no final evaluation to report), `log_history.json` and the curves."""
    if trainer.is_world_process_zero():
        if metrics is not None:
            details = {"per_class": trainer.eval_per_class, "calibration": trainer.eval_calibration}
            write_json(output_dir / "metrics.json", {**metrics, **details} if metrics else {})
        write_json(output_dir / "log_history.json", trainer.state.log_history)
        plot_training_curves(trainer.state.log_history, output_dir)


def _kept_checkpoint(output_dir: Path) -> str:
    """Where a stopped run can continue from."""
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    return f"the last checkpoint is {last} (continue with --resume)" if last else "no checkpoint was saved"


def record_provenance(model: EoMTForUniversalSegmentation, settings: TrainSettings, info: DatasetInfo) -> None:
    """The data set's category ids and, for the model card, where the weights start from and which data and splits
    train them (`EoMTConfig.category_ids`, `training_summary`; `EoMTTrainer` adds the recipe and results)."""
    model.config.category_ids = None if info.category_ids is None else list(info.category_ids)
    dataset = {"name": str(settings.data) if settings.format == "hub" else info.name, "task": info.task,
               "train_split": settings.train_split, "eval_split": settings.eval_split}  # fmt: skip
    model.config.training_summary = {"base_model": settings.backbone or settings.checkpoint, "dataset": dataset}


def resolve_image_size(settings: TrainSettings, info: DatasetInfo) -> int:
    """The input side: given, else the checkpoint's, else the task's default (640, or 512 for semantic)."""
    if settings.image_size is not None:
        return settings.image_size
    if settings.checkpoint is not None:
        return config_side(EoMTConfig.from_pretrained(settings.checkpoint))
    return int(settings.model_config.get("image_size") or TASK_DEFAULTS[info.task]["image_size"])


def config_side(config: EoMTConfig) -> int:
    """The side of a model's square input."""
    size = config.image_size
    return int(size if isinstance(size, int) else max(size))


def _run_length(settings: TrainSettings, args: TrainingArguments, dataset: Any) -> tuple[int, float | None]:
    """The optimizer steps of the run (as `Trainer` counts them) and the passes over the training data they make
    (None for a streamed data set, whose length is unknown)."""
    if settings.max_steps is not None:
        steps = settings.max_steps
    else:  # epochs x optimizer steps per epoch
        batches = math.ceil(len(dataset) / (settings.batch_size * args.world_size))
        steps = math.ceil(settings.epochs * max(1, batches // settings.gradient_accumulation_steps))
    if not hasattr(dataset, "__len__"):
        return steps, None
    return steps, steps * settings.batch_size * args.world_size * settings.gradient_accumulation_steps / len(dataset)


def _training_arguments(settings: TrainSettings, has_eval: bool) -> TrainingArguments:
    """`TrainingArguments` of the run; the learning rate and the clipping norm are set from the recipe after."""
    eval_steps = settings.eval_steps if has_eval else None
    return recipe_training_arguments(
        str(settings.output_dir),
        weight_decay=settings.weight_decay,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size or settings.batch_size,
        max_steps=settings.max_steps if settings.max_steps is not None else -1,
        num_train_epochs=settings.epochs,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        bf16=settings.bf16,
        gradient_checkpointing=settings.gradient_checkpointing,
        dataloader_num_workers=settings.workers,
        dataloader_persistent_workers=settings.workers > 0,
        dataloader_pin_memory=torch.accelerator.is_available() and not settings.use_cpu,  # else torch warns
        seed=settings.seed,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps,
        report_to=settings.report_to,
        use_cpu=settings.use_cpu,
        disable_tqdm=not settings.progress,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Evaluate
# ----------------------------------------------------------------------------------------------------------------------


def evaluate(
    model_path: str,
    data: str,
    *,
    split: str = "val",
    format: str | None = None,
    task: str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    masked_attention: bool = False,
    threshold: float | None = None,
    use_cpu: bool = False,
    progress: bool = True,
    output: str | os.PathLike | None = None,
    hub_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the EoMT checkpoint `model_path` on `split` of the data set at `data` (validated first), mask-free
    unless `masked_attention`, with the post-processing's class-score `threshold` (None: for panoptic the model
    processor's, 0.8 unless `eomt train` chose another; 0 for instance). Returns the metrics (with `per_class`) and
    writes them as JSON to `output` (default: `eval_metrics.json` in the model folder when it is local, else in the
    current folder). `hub_options` as in `TrainSettings`."""
    eval_dataset = make_eval_dataset(data, split, format=format, task=task, **(hub_options or {}))
    info = eval_dataset.info
    config = EoMTConfig.from_pretrained(model_path)
    if config.num_labels != info.num_labels:
        raise ValueError(
            f"{model_path} predicts {config.num_labels} classes but {info.name} has {info.num_labels}: evaluate a "
            "model trained on this data set's classes"
        )
    model = EoMTForUniversalSegmentation.from_pretrained(model_path)
    check_finite(model, model_path)
    processor = build_processor(info, config_side(config), model_path)
    output = Path(output) if output is not None else (
        Path(model_path) if Path(model_path).is_dir() else Path.cwd()) / "eval_metrics.json"  # fmt: skip
    args = recipe_training_arguments(
        str(output.parent), per_device_eval_batch_size=batch_size, dataloader_num_workers=workers, report_to="none",
        use_cpu=launch_uses_cpu(use_cpu), disable_tqdm=not progress,
    )  # fmt: skip
    trainer = EoMTTrainer(
        model=model, args=args, eval_dataset=eval_dataset, processing_class=processor, mask_annealing=False,
        eval_masked_attention=masked_attention, postprocess_kwargs=None if threshold is None else {"threshold": threshold},
    )  # fmt: skip
    check_process_group(trainer.args)
    metrics = {**trainer.evaluate(), "per_class": trainer.eval_per_class, "calibration": trainer.eval_calibration}
    if trainer.is_world_process_zero():
        write_json(output, metrics)
    return metrics


def write_json(path: Path, content: Any) -> None:
    """`content` as JSON (NaN and infinities as null), written atomically."""
    write_text_atomically(path, json.dumps(_finite(content), indent=2) + "\n")


def _finite(value: Any) -> Any:
    """NaN and infinities -> None (JSON has neither), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
