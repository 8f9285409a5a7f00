"""int8 inference on CPU (`EoMTForUniversalSegmentation.enable_fast_inference("int8")`): the transformer blocks' linear
layers multiply int8 weights by int8 activations in oneDNN, which runs them on AMX tiles or VNNI where the CPU has
them (without either, the activations take 7 bits: `fast_paths.choose_cpu_kernels`); the rest of the model runs under
bfloat16 autocast where the CPU computes in bfloat16, else in float32 (`fast_paths.fast_autocast_dtype`).

Weights are quantised once, symmetrically per output channel; activations per tensor at run time (dynamic
quantisation: no calibration data). Measurements: docs/benchmarks/fast-paths.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fast_paths

ENGINE = "onednn"


def check_int8_support(device: torch.device) -> None:
    """Raise a `ValueError` naming the reason when int8 inference cannot run on `device` with this PyTorch build."""
    if device.type != "cpu":
        raise ValueError(f"int8 inference runs on the CPU; the model is on {device}: use bfloat16 or float16 there")
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"int8 inference needs PyTorch's {ENGINE!r} quantized engine (x86 CPUs); this build has "
            f"{torch.backends.quantized.supported_engines}"
        )


def pack_int8_weight(weight: Tensor, bias: Tensor | None) -> torch.ScriptObject:
    """oneDNN's packed int8 form of a linear layer: `weight` `(out, in)` quantised symmetrically per output channel
    (the largest magnitude of each row maps to 127), `bias` kept in float32."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # (out,)
    integers = torch.round(weight / scales[:, None]).to(torch.int8)
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    previous_engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = ENGINE  # the packed form belongs to the engine current at packing time
        with warnings.catch_warnings():
            # PyTorch deprecates creating quantized tensors in Python; this one only carries the weight into the pack.
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            quantized = torch._make_per_channel_quantized_tensor(integers, scales.double(), zero_points, 0)
        bias = None if bias is None else bias.detach().float()
        return torch.ops.quantized.linear_prepack(quantized, bias)
    finally:
        torch.backends.quantized.engine = previous_engine


class Int8Linear(nn.Module):
    """A linear layer that computes with int8 weights and activations in eval mode (`pack_int8_weight`; activations
    quantised per tensor on each call, to 8 bits or to 7 where `fast_paths.CPU_KERNELS` says) and returns float32. Its
    float `weight` and `bias` stay registered, so the state dict is that of the `nn.Linear` it replaces, and compute the
    output in training mode. The int8 weights are those of the time of packing."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.packed_weight = pack_int8_weight(linear.weight, linear.bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        if self.training:
            return F.linear(hidden_states, self.weight, self.bias)
        # oneDNN quantises float32 inputs only (under autocast the attention output arrives in bfloat16) and returns
        # float32; under autocast the output takes autocast's dtype, as `nn.Linear`'s would, so that the attention
        # after the qkv projection runs in that dtype's kernel (`fast_paths.CPU_KERNELS`), not in float32.
        reduce_range = fast_paths.CPU_KERNELS.int8_reduce_range
        output = torch.ops.quantized.linear_dynamic(hidden_states.float(), self.packed_weight, reduce_range)
        if torch.is_autocast_enabled(output.device.type):
            return output.to(torch.get_autocast_dtype(output.device.type))
        return output

    def to_linear(self) -> nn.Linear:
        """The `nn.Linear` with the same (shared) weight and bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int8_candidates(blocks: Iterable[nn.Module]) -> Iterable[tuple[nn.Module, str]]:
    """`(parent, name)` of every linear layer of the transformer `blocks` that computes through its module: all but
    the fused qkv projection of attention with separate query and value biases (DINOv3), which `F.linear` applies to
    its float weight directly."""
    for block in blocks:
        for parent in block.modules():
            for name, child in parent.named_children():
                separate_biases = name == "qkv" and getattr(parent, "q_bias", None) is not None
                if isinstance(child, (nn.Linear, Int8Linear)) and not separate_biases:
                    yield parent, name


def set_int8_linear_layers(blocks: Iterable[nn.Module], enabled: bool) -> int:
    """Swap the linear layers of the transformer `blocks` for `Int8Linear`s (packed afresh from the current weights),
    or back to `nn.Linear`s when not `enabled`. Returns how many layers are int8 now."""
    count = 0
    for parent, name in list(int8_candidates(blocks)):
        layer = getattr(parent, name)
        linear = layer.to_linear() if isinstance(layer, Int8Linear) else layer
        if enabled:
            check_int8_support(linear.weight.device)
            setattr(parent, name, Int8Linear(linear).train(linear.training))
            count += 1
        elif layer is not linear:
            setattr(parent, name, linear.train(layer.training))
    return count
