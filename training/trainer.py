"""`EoMTTrainer`: `transformers.Trainer` with EoMT's loss, optimizer recipe and mask annealing, and its collator."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import EvalLoopOutput

from modeling_eomt import fast_paths
from modeling_eomt.checkpoints.io import staged_directory
from modeling_eomt.loss_eomt import MaskClassificationLoss

from .annealing import MaskAnnealingCallback, unwrap_model
from .data.pipeline import EpochCallback
from .evaluation import (
    SegmentationEvaluator,
    calibration_warnings,
    evaluation_dataloader,
    inference_attention,
    is_evaluation_dataset,
)
from .metrics.distributed import all_reduce_sum, is_distributed
from .nonfinite import NonFiniteGuard
from .optim import layer_decay_parameter_groups, two_stage_warmup_poly_schedule

logger = logging.getLogger(__name__)

TARGET_KEYS = ("mask_labels", "class_labels")

# The authors' recipe beyond transformers' defaults: AdamW lr 1e-4 and weight decay 0.05, gradient norm clipped at 0.01
# (their Lightning `gradient_clip_val`).
RECIPE_DEFAULTS = dict(learning_rate=1e-4, weight_decay=0.05, max_grad_norm=0.01)


def recipe_training_arguments(output_dir: str = "trainer_output", **overrides: Any) -> TrainingArguments:
    """`TrainingArguments` with the EoMT recipe's defaults (`RECIPE_DEFAULTS`); keyword arguments override them."""
    return TrainingArguments(output_dir=output_dir, **{**RECIPE_DEFAULTS, **overrides})


class EoMTDataCollator:
    """Batches EoMT training examples: stacks `pixel_values` `(C, H, W)` into `(B, C, H, W)` and keeps the per-image
    `mask_labels` `(n_i, H, W)` and `class_labels` `(n_i,)` as lists (images have different numbers of masks).
    Any other key is kept as a list of the examples' values."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if len(features) == 0:
            raise ValueError("EoMTDataCollator got an empty list of examples")
        pixel_values = []
        for index, feature in enumerate(features):
            if "pixel_values" not in feature:
                raise ValueError(f"example {index} has no 'pixel_values' (keys: {sorted(feature)})")
            pixels = torch.as_tensor(feature["pixel_values"])
            if pixels.ndim != 3 or (pixel_values and pixels.shape != pixel_values[0].shape):
                expected = tuple(pixel_values[0].shape) if pixel_values else "(channels, height, width)"
                raise ValueError(
                    f"example {index}: pixel_values has shape {tuple(pixels.shape)}, expected {expected}; resize or pad "
                    "the images of a batch to one size (the image processor does this)"
                )
            pixel_values.append(pixels)
        batch: dict[str, Any] = {"pixel_values": torch.stack(pixel_values)}
        if "mask_labels" in features[0]:
            batch["mask_labels"] = [torch.as_tensor(feature["mask_labels"]) for feature in features]
        if "class_labels" in features[0]:
            batch["class_labels"] = [torch.as_tensor(feature["class_labels"]).long() for feature in features]
        for key in features[0]:
            if key not in batch:
                batch[key] = [feature.get(key) for feature in features]
        return batch


class EoMTTrainer(Trainer):
    """`Trainer` for `EoMTForUniversalSegmentation` with the authors' recipe by default.

    - loss: `MaskClassificationLoss` (coefficients from the model config unless `loss_fn` is given) on every
      prediction level, its components logged at logging steps (averaged since the last log);
    - optimizer: `TrainingArguments.optim` (AdamW by default) over `layer_decay_parameter_groups` with
      `args.learning_rate` and `args.weight_decay` (`recipe_training_arguments` sets the recipe's 1e-4 and 0.05);
    - schedule: `two_stage_warmup_poly_schedule` over the training steps (`args.lr_scheduler_type` and
      `args.warmup_*` are not used; pass `optimizers=(optimizer, scheduler)` to replace both);
    - `MaskAnnealingCallback` (first in the callback list) unless `mask_annealing=False`;
    - `EoMTDataCollator` unless another collator is given; an `EpochCallback` for a training set with `set_epoch`
      (fresh augmentation draws every epoch);
    - streaming evaluation on the data sets of `training.data.make_eval_dataset` (original images and ground truth):
      batch by batch, the image processor (`processing_class`, an `EoMTImageProcessor`) prepares the inputs, the
      model runs mask-free, the predictions are post-processed to the original sizes and added to the task's metric
      (PQ, mask AP or mIoU); nothing is accumulated but the metric's state. `evaluate()` returns `eval_pq`, `eval_sq`,
      `eval_rq` (+ `_things` / `_stuff`), `eval_ap*` or `eval_miou` / `eval_pixel_accuracy`, reduced over processes,
      and `eval_loss` (the final prediction's loss on the non-crowd targets at the input resolution); panoptic also
      `eval_pq@t` (+ `_things` / `_stuff`) for the thresholds `t` of `training.evaluation.SWEEP_THRESHOLDS` and the
      post-processing's own, from the same forward passes (with the mask-overlap thresholds of `sweep_overlaps` too,
      in `eval_calibration["sweep"]`). Per-class results of the last evaluation are kept in `eval_per_class`, the
      class-score calibration (`SegmentationEvaluator.calibration`) in `eval_calibration`; a thing or stuff class
      without any prediction above the threshold is named in a warning. Other eval data sets
      (`pixel_values` + targets) get `Trainer`'s loop and only `eval_loss`.

    Training batches hold `pixel_values` and the targets `mask_labels` / `class_labels` (see `modeling_eomt.loss_eomt`).

    Args (besides `Trainer`'s):
        loss_fn: the loss; defaults to `MaskClassificationLoss.from_config(model.config)`.
        layer_decay: layer-wise lr decay factor (0.8).
        head_warmup_steps, backbone_warmup_steps, poly_power: the two-stage schedule (500, 1000, 0.9).
        exclude_from_weight_decay: no weight decay on biases, norms, tokens, position embeddings and LayerScale
            (the authors decay every parameter: False).
        mask_annealing: True for the default `MaskAnnealingCallback()` (paper schedule derived from the number of
            steps), a configured callback, or False to leave `attn_mask_probs` alone.
        eval_masked_attention: evaluate with masked attention in every masked block (`attn_mask_probs` 1) instead of
            mask-free (0, what an annealed model runs); the probabilities are restored afterwards.
        eval_loss: compute `eval_loss` in the streaming evaluation.
        postprocess_kwargs: arguments of the processor's post-processing in the streaming evaluation (defaults:
            the processor's panoptic settings / `training.evaluation.INSTANCE_POSTPROCESS`).
        sweep_overlaps: panoptic evaluation also computes PQ at these mask-overlap thresholds (an attribute, which
            `training.run` sets for the final evaluation of `eomt train`).
        max_nonfinite_steps: a step whose loss or gradients hold NaN or infinity is skipped with a warning (logged as
            `nonfinite_steps`); after this many in a row training stops (`nonfinite_guard.stopped`; see
            `training.nonfinite.NonFiniteGuard`).

    Models and checkpoints are saved atomically: files are written to a temporary folder, then moved into place.
    """

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean: `training_step` divides it by the accumulation steps

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        *,
        loss_fn: MaskClassificationLoss | None = None,
        layer_decay: float = 0.8,
        head_warmup_steps: int = 500,
        backbone_warmup_steps: int = 1000,
        poly_power: float = 0.9,
        exclude_from_weight_decay: bool = False,
        mask_annealing: bool | MaskAnnealingCallback = True,
        eval_masked_attention: bool = False,
        eval_loss: bool = True,
        postprocess_kwargs: dict[str, Any] | None = None,
        sweep_overlaps: Sequence[float] = (),
        max_nonfinite_steps: int = 5,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("EoMTTrainer needs a model (an EoMTForUniversalSegmentation)")
        if args is None:
            args = recipe_training_arguments()
        elif args.weight_decay == 0.0 and args.learning_rate == _default_learning_rate():
            logger.warning(
                "TrainingArguments has transformers' default learning_rate=%g and weight_decay=0; the EoMT recipe uses "
                "1e-4 and 0.05 (see training.trainer.recipe_training_arguments)", args.learning_rate,
            )  # fmt: skip
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else EoMTDataCollator(),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if args.bf16 and fast_paths.bfloat16_is_emulated(args.device):
            logger.warning(
                "bf16 mixed precision on a CPU without avx512_bf16 or amx_bf16: its matmuls are emulated, about 10x "
                "slower than float32 (a training step of the demo model took 3.3 s against 0.34 s on an AMD EPYC Zen "
                "3); train in float32 on this CPU"
            )
        self.loss_fn = loss_fn if loss_fn is not None else MaskClassificationLoss.from_config(unwrap_model(model).config)
        self.layer_decay = layer_decay
        self.head_warmup_steps = head_warmup_steps
        self.backbone_warmup_steps = backbone_warmup_steps
        self.poly_power = poly_power
        self.exclude_from_weight_decay = exclude_from_weight_decay
        self.eval_masked_attention = eval_masked_attention
        self.eval_loss = eval_loss
        self.postprocess_kwargs = postprocess_kwargs
        self.sweep_overlaps = tuple(sweep_overlaps)
        self.eval_per_class: dict[str, Any] = {}
        self.last_eval_metrics: dict[str, float] = {}  # the last streaming evaluation's, for the model card
        self.eval_calibration: dict[str, Any] = {}
        self.label_names = list(TARGET_KEYS)  # kept by `remove_unused_columns`; eval computes `eval_loss`
        self._install_annealing(mask_annealing)
        self._install_epoch_callback(train_dataset)
        self._component_sums: dict[str, Tensor] = {}
        self._component_batches = 0
        self.nonfinite_guard = NonFiniteGuard(max_nonfinite_steps)
        self.nonfinite_guard.leave_gradients = self.accelerator.scaler is not None
        self.add_callback(self.nonfinite_guard)

    def _install_annealing(self, mask_annealing: bool | MaskAnnealingCallback) -> None:
        """Put the annealing callback first, so that reporting integrations see the probabilities it logs."""
        callbacks = self.callback_handler.callbacks
        given = [callback for callback in callbacks if isinstance(callback, MaskAnnealingCallback)]
        if isinstance(mask_annealing, MaskAnnealingCallback) and mask_annealing not in given:
            given.append(mask_annealing)
        if len(given) > 1:
            raise ValueError("EoMTTrainer got more than one MaskAnnealingCallback")
        if given and mask_annealing is False:
            raise ValueError("mask_annealing=False but a MaskAnnealingCallback was passed in `callbacks`")
        for callback in given:
            if callback in callbacks:
                callbacks.remove(callback)
        if mask_annealing is not False:
            callbacks.insert(0, given[0] if given else MaskAnnealingCallback())

    def _install_epoch_callback(self, dataset: Any) -> None:
        """An `EpochCallback` for a training set with `set_epoch` (those of `training.data.make_train_dataset`), unless
        one is given: accelerate's data loader passes the epoch on to the data set only when the sampler does not take
        it (in multi-process runs its seedable sampler does)."""
        if not hasattr(dataset, "set_epoch"):
            return
        if not any(isinstance(callback, EpochCallback) for callback in self.callback_handler.callbacks):
            self.add_callback(EpochCallback(dataset))

    # ---- loss ----

    def loss_and_outputs(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor], Any]:
        """Run the model on `inputs["pixel_values"]` and the loss on the targets: (loss, components, outputs)."""
        missing = [key for key in ("pixel_values", *TARGET_KEYS) if key not in inputs]
        if missing:
            raise ValueError(
                f"EoMTTrainer batches need pixel_values, mask_labels and class_labels; missing {missing} "
                f"(batch keys: {sorted(inputs)}). Use EoMTDataCollator and keep those columns."
            )
        pixel_values = inputs["pixel_values"]
        outputs = model(pixel_values=pixel_values)
        # The model's own loss (what `model(pixel_values, mask_labels=..., class_labels=...)` returns), with `loss_fn`.
        loss, components = unwrap_model(model).compute_loss(
            outputs, inputs["mask_labels"], inputs["class_labels"], input_size=tuple(pixel_values.shape[-2:]),
            loss_fn=self.loss_fn,
        )  # fmt: skip
        outputs["loss"], outputs["loss_components"] = loss, components
        return loss, components, outputs

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        loss, components, outputs = self.loss_and_outputs(model, inputs)
        if model.training:
            self.nonfinite_guard.observe_loss(loss)
            for name, value in components.items():
                self._component_sums[name] = self._component_sums.get(name, 0.0) + value.detach()
            self._component_batches += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the loss components, averaged over the batches since the last training log and over processes."""
        if "loss" in logs and self._component_batches > 0:
            names = list(self._component_sums)
            values = torch.stack([self._component_sums[name] for name in names]) / self._component_batches
            values = self.accelerator.reduce(values, reduction="mean")
            logs.update({name: value for name, value in zip(names, values.tolist())})
            self._component_sums, self._component_batches = {}, 0
        if "loss" in logs:
            self.nonfinite_guard.annotate_log(logs)
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """`Trainer._save` (model, processor, arguments), atomically: see `staged_directory`."""
        with staged_directory(self.args.output_dir if output_dir is None else output_dir) as staging:
            super()._save(str(staging), state_dict)

    # ---- streaming evaluation ----

    def get_eval_dataloader(self, eval_dataset: str | Any | None = None) -> DataLoader:
        """This process's share of an evaluation data set (see `training.evaluation.evaluation_dataloader`); other
        data sets get `Trainer`'s loader."""
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else eval_dataset
        dataset = self.eval_dataset if dataset is None else dataset
        if not is_evaluation_dataset(dataset):
            return super().get_eval_dataloader(eval_dataset)
        args = self.args
        workers = args.dataloader_num_workers
        return evaluation_dataloader(
            dataset,
            args.eval_batch_size,
            args.process_index,
            args.world_size,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and args.device.type == "cuda",
            **({"prefetch_factor": args.dataloader_prefetch_factor} if workers and args.dataloader_prefetch_factor else {}),
        )

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        dataset = getattr(dataloader, "dataset", None)
        if not is_evaluation_dataset(dataset):
            return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        return self.streaming_evaluation_loop(dataloader, dataset.info, metric_key_prefix)

    def streaming_evaluation_loop(self, dataloader: DataLoader, info: Any, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """Pre-process, forward, post-process and update the metric batch by batch (see the class docstring)."""
        processor = self.processing_class
        if not hasattr(processor, "post_process_panoptic_segmentation"):
            raise ValueError(
                f"evaluating on {info.name} needs the image processor: pass processing_class=EoMTImageProcessor(...) "
                f"to EoMTTrainer (got {type(processor).__name__})"
            )
        model = self._evaluation_model()
        config = unwrap_model(model).config
        if config.num_labels != info.num_labels:
            raise ValueError(
                f"the model predicts {config.num_labels} classes but {info.name} has {info.num_labels}: load the model "
                f"with num_labels={info.num_labels} (and reinitialize_heads=True) to fine-tune on it"
            )
        evaluator = SegmentationEvaluator(info, processor, self.postprocess_kwargs, sweep_overlaps=self.sweep_overlaps)
        model.eval()
        self.callback_handler.eval_dataloader = dataloader
        totals = torch.zeros(3, dtype=torch.float64)  # images, loss x rows, rows with a loss
        rng_devices = [self.args.device] if self.args.device.type == "cuda" else []
        with inference_attention(model, self.eval_masked_attention), torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(self.args.seed)  # the loss samples points: the same draws every evaluation
            for examples in self._lockstep(dataloader):
                if examples is None:  # other processes still have batches: match their forward passes
                    self._placeholder_forward(model)
                    continue
                totals += self._evaluation_step(model, evaluator, examples)
                self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        num_images, loss_sum, loss_rows = all_reduce_sum([totals])[0].tolist()
        results = evaluator.compute(per_class=True)
        self.eval_per_class = next((results.pop(key) for key in list(results) if key.startswith("per_class")), {})
        self.eval_calibration = results.pop("calibration", {})
        if self.is_world_process_zero():
            for message in calibration_warnings(self.eval_calibration):
                logger.warning(message)
        if loss_rows > 0:
            results["loss"] = loss_sum / loss_rows
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in results.items()}
        self.last_eval_metrics = dict(results)
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=int(num_images))

    def _evaluation_step(self, model: nn.Module, evaluator: SegmentationEvaluator, examples: dict[str, list]) -> Tensor:
        """One batch of evaluation examples: inputs, forward, loss, post-processing, metric update. Returns
        `(images, loss x rows, rows)` (rows: images or windows; the loss terms are 0 without `eval_loss`)."""
        device = self.args.device
        inputs = evaluator.preprocess(examples, with_targets=self.eval_loss)
        rows = inputs["pixel_values"].shape[0]
        loss_terms = [0.0, 0.0]
        with torch.no_grad(), self.autocast_smart_context_manager():
            outputs = model(pixel_values=inputs["pixel_values"].to(device), patch_offsets=inputs.get("patch_offsets"))
            if self.eval_loss:
                loss, _ = self.loss_fn(
                    outputs.masks_queries_logits,
                    outputs.class_queries_logits,
                    [masks.to(device) for masks in inputs["mask_labels"]],
                    [labels.to(device) for labels in inputs["class_labels"]],
                    average_num_masks=False,
                )
                loss_terms = [loss.item() * rows, rows]
        logits = {
            "class_queries_logits": outputs.class_queries_logits.float(),
            "masks_queries_logits": outputs.masks_queries_logits.float(),
            "patch_offsets": inputs.get("patch_offsets"),
        }
        evaluator.add(logits, inputs["original_sizes"], examples)
        return torch.tensor([len(examples["image"]), *loss_terms], dtype=torch.float64)

    def _placeholder_forward(self, model: nn.Module) -> None:
        """A forward pass on a blank input of the model's size, for a process that has run out of batches."""
        config = unwrap_model(model).config
        side = (config.grid_size[0] * config.patch_size, config.grid_size[1] * config.patch_size)
        with torch.no_grad(), self.autocast_smart_context_manager():
            model(pixel_values=torch.zeros(1, config.num_channels, *side, device=self.args.device))

    def _lockstep(self, dataloader: DataLoader):
        """This process's batches, then None while any other process still has batches, so that every process runs
        the same number of forward passes (FSDP and DeepSpeed ZeRO-3 gather parameters in every forward)."""
        if not is_distributed():
            yield from dataloader
            return
        batches = iter(dataloader)
        while True:
            batch = next(batches, None)
            busy = all_reduce_sum([torch.tensor([float(batch is not None)])])[0]
            if busy.item() == 0:
                return
            yield batch

    def _evaluation_model(self) -> nn.Module:
        """The model to evaluate, prepared by accelerate as `Trainer.evaluation_loop` does when called outside
        training (DeepSpeed / FSDP wrap it; otherwise it is put on the device)."""
        if self.is_deepspeed_enabled and self.deepspeed is None:
            from transformers.integrations.deepspeed import deepspeed_init

            deepspeed_init(self, num_training_steps=0, inference=True)
        model = self._wrap_model(self.model, training=False)
        if len(self.accelerator._models) == 0 and model is self.model:
            sharded = self.is_deepspeed_enabled or (self.is_fsdp_enabled and not self.args.torch_compile)
            model = self.accelerator.prepare(model) if sharded else self.accelerator.prepare_model(model, evaluation_mode=True)
            if self.is_fsdp_enabled:
                self.model = model
            if model is not self.model:
                self.model_wrapped = model
            if self.is_deepspeed_enabled:
                self.deepspeed = self.model_wrapped
        return model

    # ---- model card ----

    def training_summary(self) -> dict[str, Any]:
        """What the model card reports about this run (`EoMTConfig.training_summary`): the data set, the recipe as run
        and the last evaluation's results, added to what the model records already (its base model)."""
        model = unwrap_model(self.model)
        summary = dict(getattr(model.config, "training_summary", None) or {})
        info = getattr(self.train_dataset, "info", None) or getattr(self.eval_dataset, "info", None)
        if info is not None:
            summary["dataset"] = {"name": info.name, **(summary.get("dataset") or {}), "task": info.task}
        if self.state.global_step > 0:
            summary["recipe"] = self._recipe_as_run(model)
        numbers = {key: value for key, value in self.last_eval_metrics.items() if isinstance(value, (int, float))}
        if numbers:
            summary["eval_results"] = numbers
        return summary

    def _recipe_as_run(self, model: nn.Module) -> dict[str, Any]:
        args = self.args
        annealing = next((c for c in self.callback_handler.callbacks if isinstance(c, MaskAnnealingCallback)), None)
        schedule = getattr(annealing, "schedule", None)
        precision = "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "float32"
        return {
            "steps": self.state.global_step,
            "batch_size": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
            "input_size": model.config.image_size,
            "optimizer": f"{args.optim} (lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, layer-wise lr "
            f"decay {self.layer_decay:g}, gradient norm clipped at {args.max_grad_norm:g})",
            "learning_rate_schedule": f"{self.head_warmup_steps} warm-up steps of the new parameters, then "
            f"{self.backbone_warmup_steps} of the backbone; polynomial decay (power {self.poly_power:g})",
            "mask_annealing": "none" if schedule is None else f"block i from step start_i to end_i, starts "
            f"{list(schedule.start_steps)}, ends {list(schedule.end_steps)}, power {schedule.power:g}",
            "precision": precision,
            "seed": args.seed,
        }

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, with the run's `training_summary` in the config (the saved model card shows it)."""
        model = unwrap_model(self.model)
        if hasattr(model.config, "training_summary"):
            model.config.training_summary = self.training_summary()
        super().save_model(output_dir, _internal_call)

    def record_results(self, output_dir: str) -> None:
        """After an evaluation of the model saved in `output_dir`: its config and model card, rewritten with the
        results (the weights stay as saved)."""
        from modeling_eomt.model_card import write_model_card

        if not self.is_world_process_zero():
            return
        config = unwrap_model(self.model).config
        config.training_summary = self.training_summary()
        config.save_pretrained(output_dir)
        write_model_card(config, output_dir)

    def create_model_card(self, model_name: str | None = None, finetuned_from: str | None = None,
                          tags: str | list[str] | None = None, dataset: str | None = None, **kwargs: Any) -> None:
        """This package's model card (`modeling_eomt.model_card`) in `args.output_dir`, in place of transformers'
        generic one; `model_name`, `finetuned_from`, `dataset` and `tags` go into it."""
        from huggingface_hub import ModelCard

        from modeling_eomt.model_card import write_model_card

        if not self.is_world_process_zero():
            return
        config = unwrap_model(self.model).config
        summary = self.training_summary()
        summary.update({key: value for key, value in (("model_name", model_name), ("base_model", finetuned_from))
                        if value is not None})  # fmt: skip
        if dataset is not None:
            summary["dataset"] = {**summary.get("dataset", {}), "name": dataset}
        config.training_summary = summary
        path = write_model_card(config, self.args.output_dir, repo=self.hub_model_id)
        if path is not None and tags:
            card = ModelCard.load(path)
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *([tags] if isinstance(tags, str) else tags)]))
            card.save(path)

    # ---- optimizer and schedule ----

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """`args.optim` (AdamW by default) over the layer-wise lr decay groups."""
        if self.optimizer is None:
            opt_model = unwrap_model(self.model if model is None else model)
            groups = layer_decay_parameter_groups(
                opt_model,
                learning_rate=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                layer_decay=self.layer_decay,
                exclude_from_weight_decay=self.exclude_from_weight_decay,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            unsupported = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
            if unsupported:
                raise ValueError(
                    f"optim={self.args.optim!r} builds its own parameter groups, which layer-wise lr decay cannot use; "
                    "pass `optimizers=(optimizer, scheduler)` instead"
                )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The two-stage warm-up + polynomial decay over `num_training_steps`."""
        if self.lr_scheduler is None:
            self.lr_scheduler = two_stage_warmup_poly_schedule(
                self.optimizer if optimizer is None else optimizer,
                total_steps=num_training_steps,
                head_warmup_steps=self.head_warmup_steps,
                backbone_warmup_steps=self.backbone_warmup_steps,
                power=self.poly_power,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler


def _default_learning_rate() -> float:
    return next(field.default for field in dataclasses.fields(TrainingArguments) if field.name == "learning_rate")
