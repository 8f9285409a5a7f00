"""Training steps whose loss or gradients hold NaN or infinity: skipped, counted, and after too many in a row, the end
of the run (a diverging run must not go on for hours and then save a broken model).

`NonFiniteGuard` is a `TrainerCallback` that `EoMTTrainer` installs; the trainer passes it every training loss
(`observe_loss`). Before each optimizer step it checks the loss since the last step and the gradients (after
clipping, one device sync for both); on a NaN or infinity it drops the gradients, so that the optimizer leaves every
parameter and its state alone, and logs a warning. After `max_consecutive` such steps in a row it stops training
without saving a checkpoint; `stopped` then tells the caller not to save the model. Under fp16 mixed precision the
gradient scaler skips those steps itself (and lowers its scale), so the gradients are left to it and only counted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .metrics.distributed import all_reduce_sum, is_distributed

logger = logging.getLogger(__name__)


def parameters_are_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of `model` is finite (one device sync)."""
    tensors = [tensor.detach() for tensor in model.state_dict().values() if tensor.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=float("inf"))))


class NonFiniteGuard(TrainerCallback):
    """Skips optimizer steps with a NaN / infinite loss or gradient and stops after `max_consecutive` in a row (see the
    module docstring).

    After training: `stopped` (training was stopped by it), `skipped_steps` (the 1-based steps skipped),
    `last_finite_checkpoint` (the newest checkpoint saved with finite weights, or None)."""

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be at least 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.leave_gradients = False  # True under a gradient scaler (fp16), which skips these steps itself
        self.consecutive = 0
        self.skipped_steps: list[int] = []
        self.stopped = False
        self.last_finite_checkpoint: str | None = None
        self._nonfinite_loss: Tensor | None = None  # any loss since the last optimizer step was not finite
        self._skipped_since_log = 0
        self._nonfinite_losses_since_log = 0
        self._steps_since_log = 0

    def observe_loss(self, loss: Tensor) -> None:
        """Note one training loss (no device sync: the check happens before the optimizer step)."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        gradients = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        found = torch.zeros(2, dtype=torch.float64)  # (losses, gradients) holding NaN / infinity
        if self._nonfinite_loss is not None:
            found[0] = self._nonfinite_loss.to("cpu", torch.float64)
        if gradients:
            found[1] = (~torch.isfinite(torch.nn.utils.get_total_norm(gradients, norm_type=float("inf")))).cpu()
        self._nonfinite_loss = None
        if is_distributed():  # every process must skip the same steps (FSDP shards the gradients; losses differ)
            found = all_reduce_sum([found])[0]
        bad_loss, bad_gradients = (bool(value) for value in found.tolist())
        self._steps_since_log += 1
        self._nonfinite_losses_since_log += bad_loss
        if not (bad_loss or bad_gradients):
            self.consecutive = 0
            return
        if not self.leave_gradients:
            for gradient_owner in (p for p in model.parameters() if p.grad is not None):
                gradient_owner.grad = None  # the optimizer skips parameters without a gradient: no update, no decay
        step = state.global_step + 1
        self.consecutive += 1
        self.skipped_steps.append(step)
        self._skipped_since_log += 1
        logger.warning(
            "step %d: the loss or the gradients hold NaN or infinite values; the optimizer step is skipped (%d in a "
            "row; training stops at %d)", step, self.consecutive, self.max_consecutive,
        )  # fmt: skip
        if self.consecutive >= self.max_consecutive:
            self.stopped = True
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped:  # no checkpoint or evaluation of a diverged model
            control.should_save = False
            control.should_evaluate = False

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is not None and parameters_are_finite(model):
            self.last_finite_checkpoint = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")

    def annotate_log(self, logs: dict[str, Any]) -> None:
        """Add `nonfinite_steps` (skipped since the last log) to a training log, whose `loss` becomes NaN when the
        loss of every step since the last log was (`Trainer` logs the mean of the finite ones: 0 when there are
        none)."""
        if self._skipped_since_log:
            logs["nonfinite_steps"] = self._skipped_since_log
        if self._nonfinite_losses_since_log and self._nonfinite_losses_since_log >= self._steps_since_log:
            logs["loss"] = float("nan")
        self._skipped_since_log = self._nonfinite_losses_since_log = self._steps_since_log = 0

    def describe(self, final_step: int) -> str:
        """One line on why training stopped and what was kept, for the error the caller raises."""
        first = self.skipped_steps[-self.consecutive] if self.consecutive else final_step
        kept = (
            f"the last checkpoint with finite weights is {self.last_finite_checkpoint} (lower --lr and resume from "
            "it, or start again)"
            if self.last_finite_checkpoint and os.path.isdir(self.last_finite_checkpoint)
            else "no checkpoint with finite weights was saved (lower --lr and start again)"
        )
        return (
            f"training diverged: steps {first} to {final_step} had NaN or infinite losses or gradients "
            f"({self.consecutive} in a row, each skipped; {len(self.skipped_steps)} in all), so training stopped at "
            f"step {final_step} and the final model was not written; {kept}"
        )
