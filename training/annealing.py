"""Mask annealing: the probability of masked attention in each of the last `num_blocks` blocks decays from 1 to 0.

Step semantics follow the authors' training code: after optimizer step `s` completes (`global_step == s + 1`) the
probabilities are set to `schedule(s + 1)`, so the forward passes of optimizer step `s` (all its gradient
accumulation micro-batches) use `schedule(s)`, where `s` counts completed optimizer steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


def annealing_probability(step: int, start: int, end: int, power: float = 0.9) -> float:
    """1 before `start`, 0 at and after `end`, `(1 - (step - start) / (end - start)) ** power` in between."""
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return (1.0 - (step - start) / (end - start)) ** power


@dataclass(frozen=True)
class MaskAnnealingSchedule:
    """Per-block start and end optimizer steps of the polynomial decay of `attn_mask_probs`."""

    start_steps: tuple[int, ...]
    end_steps: tuple[int, ...]
    power: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_steps", tuple(int(step) for step in self.start_steps))
        object.__setattr__(self, "end_steps", tuple(int(step) for step in self.end_steps))
        if len(self.start_steps) != len(self.end_steps):
            raise ValueError(
                f"mask annealing has {len(self.start_steps)} start steps but {len(self.end_steps)} end steps"
            )
        for block, (start, end) in enumerate(zip(self.start_steps, self.end_steps)):
            if not 0 <= start <= end:
                raise ValueError(f"mask annealing of block {block}: need 0 <= start <= end, got start={start}, end={end}")
        if self.power <= 0:
            raise ValueError(f"mask annealing power must be positive, got {self.power}")

    @classmethod
    def from_total_steps(cls, total_steps: int, num_blocks: int, power: float = 0.9) -> "MaskAnnealingSchedule":
        """The paper's default: block `i` of `n` anneals during `[(i + 1) / (n + 2), (i + 2) / (n + 2)]` of training
        (integer steps, rounded down)."""
        if total_steps < 0 or num_blocks < 1:
            raise ValueError(f"need total_steps >= 0 and num_blocks >= 1, got {total_steps} and {num_blocks}")
        bounds = [total_steps * (i + 1) // (num_blocks + 2) for i in range(num_blocks + 1)]
        return cls(tuple(bounds[:-1]), tuple(bounds[1:]), power)

    @property
    def num_blocks(self) -> int:
        return len(self.start_steps)

    def probabilities(self, step: int) -> list[float]:
        """Masked-attention probability of every block for the forward passes of optimizer step `step`."""
        return [annealing_probability(step, start, end, self.power) for start, end in zip(self.start_steps, self.end_steps)]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / FSDP / `torch.compile` / accelerate wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class MaskAnnealingCallback(TrainerCallback):
    """Sets `model.attn_mask_probs` from `state.global_step` before every optimizer step and logs them.

    Args:
        start_steps, end_steps: per-block optimizer steps; both None for the paper's default derived from
            `state.max_steps` at the start of training (`MaskAnnealingSchedule.from_total_steps`).
        power: exponent of the polynomial decay.

    The probabilities are a pure function of `global_step`, so a run resumed from a checkpoint continues with exactly
    the values an uninterrupted run has. At the end of training they are all set to 0: the saved model runs mask-free.
    Logs carry `attn_mask_prob_{i}` (the values for the next step, as the authors log them); put this callback first
    in `trainer.callback_handler.callbacks` for reporting integrations to see them (`EoMTTrainer` does).
    """

    def __init__(
        self, start_steps: Sequence[int] | None = None, end_steps: Sequence[int] | None = None, power: float = 0.9
    ) -> None:
        if (start_steps is None) != (end_steps is None):
            raise ValueError("give both start_steps and end_steps for mask annealing, or neither for the default")
        self.explicit = None if start_steps is None else MaskAnnealingSchedule(tuple(start_steps), tuple(end_steps), power)
        self.power = power
        self.schedule: MaskAnnealingSchedule | None = self.explicit

    def resolve_schedule(self, model: nn.Module, total_steps: int) -> MaskAnnealingSchedule:
        """The schedule for `model` (checked against its number of masked blocks) and `total_steps` steps."""
        probs = getattr(unwrap_model(model), "attn_mask_probs", None)
        if not isinstance(probs, torch.Tensor):
            raise ValueError(
                f"{type(unwrap_model(model)).__name__} has no `attn_mask_probs` buffer: mask annealing needs an "
                "EoMTForUniversalSegmentation"
            )
        num_blocks = probs.numel()
        schedule = self.explicit or MaskAnnealingSchedule.from_total_steps(total_steps, num_blocks, self.power)
        if schedule.num_blocks != num_blocks:
            raise ValueError(
                f"mask annealing schedule has {schedule.num_blocks} blocks but the model has {num_blocks} masked blocks"
            )
        if max(schedule.end_steps) > total_steps:
            logger.warning(
                "mask annealing ends at step %d, after the last training step %d: the probabilities are forced to 0 at "
                "the end of training", max(schedule.end_steps), total_steps,
            )  # fmt: skip
        return schedule

    def apply(self, model: nn.Module, step: int) -> None:
        """Set the model's `attn_mask_probs` to the probabilities of `step`."""
        unwrap_model(model).set_attn_mask_probs(self.schedule.probabilities(step))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        self.schedule = self.resolve_schedule(model, state.max_steps)
        self.apply(model, state.global_step)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        self.apply(model, state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        self.apply(model, state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.schedule is None:
            return
        values = {f"attn_mask_prob_{i}": p for i, p in enumerate(self.schedule.probabilities(state.global_step))}
        logs.update(values)
        # `Trainer.log` appends its record to the history before calling back: complete that record too.
        if state.log_history and state.log_history[-1].get("step") == state.global_step and "loss" in state.log_history[-1]:
            state.log_history[-1].update(values)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        model = unwrap_model(model)
        if bool((model.attn_mask_probs > 0).any()):
            logger.warning(
                "mask annealing had not finished at the end of training (%s); setting all to 0",
                model.attn_mask_probs.tolist(),
            )
        model.set_attn_mask_probs(0.0)
