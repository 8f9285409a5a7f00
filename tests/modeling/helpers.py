"""Tiny configurations and checks shared by the model tests."""

import dataclasses

import pytest
import torch

from modeling_eomt import EoMTConfig, fast_paths
from modeling_eomt.loss_eomt import MaskClassificationLoss

TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_blocks=2,
    image_size=64,
    patch_size=16,
    num_queries=5,
    num_labels=4,
)

VARIANTS = {
    "dinov2": dict(num_register_tokens=0),
    "dinov2-registers-swiglu": dict(num_register_tokens=4, ffn_type="swiglu"),
    "dinov3": dict(position_embedding_type="rope", num_register_tokens=2, key_bias=False, intermediate_size=48),
    "dinov3-gated": dict(position_embedding_type="rope", num_register_tokens=4, key_bias=False, ffn_type="glu", intermediate_size=40),
}


def tiny_config(variant: str = "dinov2-registers-swiglu", **overrides) -> EoMTConfig:
    return EoMTConfig(**{**TINY, **VARIANTS[variant], **overrides})


def perturb_(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Move every parameter away from its structured initial value (ones, zeros) so tests see every weight."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model


def use_cpu_kernels(monkeypatch, **changes) -> fast_paths.CpuKernels:
    """Make the fast paths use this machine's CPU kernels with `changes` (fields of `CpuKernels`) for one test."""
    kernels = dataclasses.replace(fast_paths.CPU_KERNELS, **changes)
    monkeypatch.setattr(fast_paths, "CPU_KERNELS", kernels)
    return kernels


def loss_of_outputs(config: EoMTConfig, outputs, mask_labels, class_labels) -> tuple[torch.Tensor, dict]:
    """`MaskClassificationLoss.from_config(config)` called directly on the final and intermediate logits of a model's
    `outputs`: the loss that the model computes from labels must equal it."""
    return MaskClassificationLoss.from_config(config)(
        outputs.masks_queries_logits, outputs.class_queries_logits, mask_labels, class_labels,
        outputs.intermediate_masks_queries_logits, outputs.intermediate_class_queries_logits,
    )  # fmt: skip


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual - expected| over the largest |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def int8_tolerance(tolerance: float) -> float:
    """An int8 tolerance stated for 8-bit activations, doubled where this CPU quantises them to 7 bits (a step twice as
    coarse: `fast_paths.CPU_KERNELS.int8_reduce_range`)."""
    return 2 * tolerance if fast_paths.CPU_KERNELS.int8_reduce_range else tolerance


# int8 inference needs oneDNN's quantized engine (x86 builds of PyTorch).
needs_int8 = pytest.mark.skipif(
    "onednn" not in torch.backends.quantized.supported_engines, reason="no oneDNN quantized engine in this build"
)
