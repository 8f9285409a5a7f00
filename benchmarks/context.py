"""What the sections share: this package's EoMT and transformers' with the same weights, the run's options and clock,
and the forward functions they time."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.measure import cpu_clock, time_interleaved
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.checkpoints import config_to_transformers_eomt, state_dict_to_transformers_eomt

NUM_LABELS = 133  # COCO panoptic


# ----------------------------------------------------------------------------------------------------------------------
# Models with the same weights
# ----------------------------------------------------------------------------------------------------------------------


def build_config(size: str, image_size: int, num_queries: int, **overrides: Any) -> EoMTConfig:
    """ViT-`size`/16 with `num_queries` queries and the COCO panoptic classes; `overrides` change any other field."""
    fields = dict(image_size=image_size, num_queries=num_queries, num_labels=NUM_LABELS)
    return EoMTConfig.from_size(size, **{**fields, **overrides})


def build_reference(ours: EoMTForUniversalSegmentation) -> nn.Module:
    """transformers' `EomtForUniversalSegmentation` with `ours`' weights (built on `ours`' device)."""
    from transformers import EomtConfig, EomtForUniversalSegmentation

    with torch.device(ours.device):  # random initialisation on the GPU, not on the CPU first
        reference = EomtForUniversalSegmentation(EomtConfig.from_dict(config_to_transformers_eomt(ours.config)))
    reference.load_state_dict(state_dict_to_transformers_eomt(ours.state_dict(), ours.config), strict=True)
    return reference.to(ours.device)


@dataclass
class ModelPair:
    ours: EoMTForUniversalSegmentation
    reference: nn.Module

    @property
    def config(self) -> EoMTConfig:
        return self.ours.config

    def set_mask_probability(self, probability: float) -> None:
        set_mask_probability(self.ours, probability)
        set_mask_probability(self.reference, probability)


def build_model_pair(config: EoMTConfig, device: torch.device, seed: int = 0) -> ModelPair:
    torch.manual_seed(seed)
    with torch.device(device):  # random initialisation on the GPU, not on the CPU first
        ours = EoMTForUniversalSegmentation(config).to(device)
    return ModelPair(ours, build_reference(ours))


def fast_copy(
    pair: ModelPair, dtype: torch.dtype | str | None, compile: bool | str = False, static_shape: tuple | None = None
) -> EoMTForUniversalSegmentation:
    """A copy of our model with `enable_fast_inference(dtype, compile, static_shape)`."""
    with torch.device(pair.ours.device):
        model = EoMTForUniversalSegmentation(pair.config).to(pair.ours.device)
    model.load_state_dict(pair.ours.state_dict())
    return model.enable_fast_inference(dtype, compile=compile, static_shape=static_shape)


# ----------------------------------------------------------------------------------------------------------------------
# Context shared by the sections
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkContext:
    args: argparse.Namespace
    device: torch.device
    config_overrides: dict[str, Any] = field(default_factory=dict)
    _pairs: dict[tuple, ModelPair] = field(default_factory=dict)

    @property
    def repeats(self) -> int:
        return self.args.repeats

    @property
    def warmup(self) -> int:
        return self.args.warmup

    def config(
        self, image_size: int | None = None, num_queries: int | None = None, size: str | None = None
    ) -> EoMTConfig:
        """`build_config` with the run's overrides; the defaults: `--size`, `--image-size`, `--queries`."""
        shape = (size or self.args.size, image_size or self.args.image_size, num_queries or self.args.queries)
        return build_config(*shape, **self.config_overrides)

    def model_pair(
        self, image_size: int | None = None, num_queries: int | None = None, size: str | None = None
    ) -> ModelPair:
        """The (cached) pair for the given shape; defaults: `--size`, `--image-size`, `--queries`."""
        key = (size or self.args.size, image_size or self.args.image_size, num_queries or self.args.queries)
        if key not in self._pairs:
            self._pairs.clear()  # one pair at a time keeps the memory of large sizes in check
            self._pairs[key] = build_model_pair(self.config(key[1], key[2], key[0]), self.device, self.args.seed)
        return self._pairs[key]

    def inference_pair(self, mask_probability: float = 0.0, **shape: Any) -> ModelPair:
        """`model_pair(**shape)` in eval mode with every `attn_mask_probs` set to `mask_probability`."""
        pair = self.model_pair(**shape)
        pair.ours.eval(), pair.reference.eval()
        pair.set_mask_probability(mask_probability)
        return pair

    def release_models(self) -> None:
        """Drop the cached model pair and return the CUDA allocator's free blocks: the next size starts afresh."""
        self._pairs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def images(self, batch_size: int, image_size: int | None = None) -> Tensor:
        side = image_size or self.args.image_size
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.randn(batch_size, 3, side, side, generator=generator).to(self.device)

    def time(self, candidates: dict[str, Callable[[], object]], description: str) -> dict[str, list[float]]:
        """Seconds of each candidate by the run's clock, `--repeats` times, interleaved (`time_interleaved`)."""
        clock = cpu_clock(self.args.threads) if self.args.clock == "cpu" else time.perf_counter
        return time_interleaved(candidates, self.repeats, self.warmup, self.device, description, clock)


# ----------------------------------------------------------------------------------------------------------------------
# What the sections time
# ----------------------------------------------------------------------------------------------------------------------


def inference(model: nn.Module, pixel_values: Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(pixel_values)

    return run


def autocast_inference(model: nn.Module, pixel_values: Tensor, dtype: torch.dtype) -> Callable[[], object]:
    """`inference` under `torch.autocast(dtype)`: transformers' model in half precision (ours: `fast_copy`)."""

    def run() -> object:
        with torch.inference_mode(), torch.autocast(pixel_values.device.type, dtype=dtype):
            return model(pixel_values)

    return run


def max_output_difference(pair: ModelPair, pixel_values: Tensor) -> float:
    """Largest absolute difference of the two models' class and mask logits (a check that both compute the same)."""
    with torch.inference_mode():
        ours, reference = pair.ours(pixel_values), pair.reference(pixel_values)
    return max(
        (ours.class_queries_logits.float() - reference.class_queries_logits.float()).abs().max().item(),
        (ours.masks_queries_logits.float() - reference.masks_queries_logits.float()).abs().max().item(),
    )


def float32_output(model: nn.Module, pixel_values: Tensor) -> Any:
    """`model(pixel_values)` in float32 with TF32 off (in matmuls and cuDNN convolutions): what the half-precision
    paths are compared with."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")
    saved = [getattr(owner, name) for owner, name in flags]
    try:
        for owner, name in flags:
            setattr(owner, name, False)
        with torch.inference_mode():
            return model(pixel_values)
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)


def relative_logit_difference(output: Any, expected: Any) -> float:
    """Largest |logit - expected logit| over the largest |expected logit|, the larger of the class and mask logits':
    how far a half-precision path is from float32, on the scale of the logits."""
    return max(
        ((getattr(output, name).float() - getattr(expected, name).float()).abs().max()
         / getattr(expected, name).float().abs().max()).item()
        for name in ("class_queries_logits", "masks_queries_logits")
    )  # fmt: skip


def repeated(run: Callable[[], object], calls: int) -> Callable[[], object]:
    """`run` `calls` times back to back: one timed repetition of a stream of calls (the timer synchronises once)."""

    def run_all() -> object:
        for _ in range(calls):
            output = run()
        return output

    return run_all


def compiled_reference(reference: nn.Module, backend: str) -> nn.Module:
    """transformers' model under `torch.compile` with `backend` (inductor: with frozen weights, as ours)."""
    options = {"options": {"freezing": True}} if backend == "inductor" else {}
    return torch.compile(reference, backend=backend, **options)


def first_call_seconds(run: Callable[[], object]) -> float:
    """Seconds of `run()` once: the compilation of a compiled model."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def set_mask_probability(model: nn.Module, probability: float) -> None:
    """Masked-attention probability of every block: our model's setter, or transformers' buffer directly."""
    if isinstance(model, EoMTForUniversalSegmentation):
        model.set_attn_mask_probs(probability)
    else:
        model.attn_mask_probs.fill_(probability)
