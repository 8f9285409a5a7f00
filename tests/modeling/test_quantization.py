"""int8 inference (`enable_fast_inference("int8")`, `modeling_eomt.quantization`): close to float32, the same state
dict, reversible, training untouched."""

import pytest
import torch
from torch import nn

from modeling_eomt import EoMTForUniversalSegmentation, fast_paths, quantization
from modeling_eomt.quantization import Int8Linear, check_int8_support
from tests.modeling.helpers import (
    int8_tolerance,
    needs_int8,
    perturb_,
    relative_difference,
    tiny_config,
    use_cpu_kernels,
)

pytestmark = needs_int8
INT8_RELATIVE_TOLERANCE = int8_tolerance(0.05)  # of the logits' largest magnitude (test_fast_inference.py)


def integer_linear(hidden_states: torch.Tensor, linear: nn.Linear, activation_levels: int) -> torch.Tensor:
    """`linear` computed in exact integer arithmetic on `Int8Linear`'s quantised operands: weights symmetric per output
    channel in [-127, 127], activations asymmetric per tensor in [0, activation_levels] (PyTorch's dynamic range)."""
    weight_scales = linear.weight.abs().amax(dim=1) / 127
    weight_integers = torch.round(linear.weight / weight_scales[:, None])
    low, high = min(hidden_states.min().item(), 0.0), max(hidden_states.max().item(), 0.0)
    scale = (high - low) / activation_levels
    zero_point = round(-low / scale)
    integers = (torch.round(hidden_states / scale) + zero_point).clamp(0, activation_levels) - zero_point
    products = integers.double() @ weight_integers.double().T  # exact: every partial sum is an integer below 2**53
    return (products * scale * weight_scales.double() + linear.bias.double()).float()


@pytest.mark.parametrize("reduce_range", [None, True], ids=["this-cpu", "7-bit"])
def test_int8_linear_computes_exact_integer_products_at_the_chosen_activation_range(reduce_range, monkeypatch):
    # Where the CPU has no VNNI, oneDNN's uint8 x int8 kernel adds pairs of products in saturating int16: with 8-bit
    # activations a layer's output was off by 36% of its scale (AMD EPYC Zen 3). The range chosen for this CPU must
    # give exact integer products (to float rounding), and 7 bits must on every CPU.
    if reduce_range is not None:
        use_cpu_kernels(monkeypatch, int8_reduce_range=reduce_range)
    levels = 127 if fast_paths.CPU_KERNELS.int8_reduce_range else 255
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    hidden_states = torch.randn(50, 64) * 3 + 1
    with torch.no_grad():
        actual = Int8Linear(linear).eval()(hidden_states)
        exact = integer_linear(hidden_states, linear, levels)
        floating = linear(hidden_states)
    assert relative_difference(actual, exact) < 1e-4
    assert relative_difference(actual, floating) > 1e-3  # the int8 kernel ran


def test_int8_linear_is_close_to_the_float_layer_and_exact_in_training_mode():
    linear = nn.Linear(48, 40)
    hidden_states = torch.randn(2, 7, 48)
    layer = Int8Linear(linear).eval()
    with torch.no_grad():
        expected = linear(hidden_states)
        actual = layer(hidden_states)
        assert actual.shape == expected.shape and actual.dtype == torch.float32
        assert 0 < relative_difference(actual, expected) < int8_tolerance(0.02)  # > 0: the int8 kernel ran
        assert relative_difference(layer(hidden_states.bfloat16()), expected) < int8_tolerance(0.03)  # bfloat16 inputs
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the output takes autocast's dtype, as nn.Linear's does
            assert layer(hidden_states).dtype == linear(hidden_states).dtype == torch.bfloat16
        assert torch.equal(layer.train()(hidden_states), expected)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    restored = layer.to_linear()
    assert type(restored) is nn.Linear and restored.weight is linear.weight and restored.bias is linear.bias


@pytest.mark.parametrize("variant, per_block", [("dinov2-registers-swiglu", 4), ("dinov3", 3)])
def test_int8_replaces_the_block_linear_layers_that_compute_through_their_module(variant, per_block):
    model = EoMTForUniversalSegmentation(tiny_config(variant)).enable_fast_inference(torch.qint8)
    layers = [module for module in model.modules() if isinstance(module, Int8Linear)]
    assert len(layers) == per_block * model.config.num_hidden_layers
    attention = model.eomt.layers[0].attention
    # DINOv3's qkv projection adds separate query and value biases to its float weight with F.linear
    assert isinstance(attention.qkv, Int8Linear) == (attention.q_bias is None)
    assert not isinstance(model.class_predictor, Int8Linear)  # the heads stay in floating point
    assert model.inference_dtype == fast_paths.fast_autocast_dtype(torch.device("cpu"))


@pytest.mark.parametrize("fast_bfloat16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_int8_attention_runs_in_the_cpus_fast_dtype(monkeypatch, fast_bfloat16):
    # The qkv projection's output feeds the attention kernel: in float32 it would take float32's kernel (on the AMD
    # EPYC with AVX-512 BF16 that made int8 inference 1.5x slower than bfloat16). Where bfloat16 is emulated (AVX2
    # only: 11x slower than float32) the layers outside int8 run in float32, the attention included.
    use_cpu_kernels(monkeypatch, fast_bfloat16=fast_bfloat16)
    dtype = torch.bfloat16 if fast_bfloat16 else torch.float32
    model = EoMTForUniversalSegmentation(tiny_config()).enable_fast_inference("int8")
    assert model.inference_dtype == (torch.bfloat16 if fast_bfloat16 else None)
    model.set_attn_mask_probs(0.0)
    seen, attention = [], fast_paths.attention

    def recording_attention(query, *args):
        seen.append(query.dtype)
        return attention(query, *args)

    monkeypatch.setattr(fast_paths, "attention", recording_attention)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [dtype] * model.config.num_hidden_layers


def test_int8_keeps_the_state_dict_and_switches_off(tmp_path):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        expected = model(pixel_values).masks_queries_logits
        model.enable_fast_inference("int8")
        assert list(model.state_dict()) == list(state)
        model.save_pretrained(tmp_path)  # the float32 weights, loadable without int8
        loaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded(pixel_values).masks_queries_logits, expected)
        model.enable_fast_inference(None)
        assert not any(isinstance(module, Int8Linear) for module in model.modules())
        assert torch.equal(model(pixel_values).masks_queries_logits, expected)


def test_int8_training_mode_uses_the_float_weights_and_repacking_sees_new_weights():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config()))
    pixel_values = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    expected_train = model.train()(pixel_values).masks_queries_logits
    model.enable_fast_inference("int8").train()
    torch.manual_seed(1)
    assert torch.equal(model(pixel_values).masks_queries_logits, expected_train)

    model.eval().set_attn_mask_probs(0.0)
    with torch.no_grad():
        before = model(pixel_values).masks_queries_logits
        fc1 = model.eomt.layers[-1].mlp.fc1
        fc1.weight.mul_(3)  # the packed int8 weights are those of enable_fast_inference's time
        assert torch.equal(model(pixel_values).masks_queries_logits, before)
        model.enable_fast_inference("int8")
        after = model(pixel_values).masks_queries_logits
        model.enable_fast_inference(None)
        expected = model(pixel_values).masks_queries_logits
    assert relative_difference(after, expected) < INT8_RELATIVE_TOLERANCE < relative_difference(before, expected)


def test_int8_refuses_other_devices_and_builds_without_onednn(monkeypatch):
    with pytest.raises(ValueError, match="int8 inference runs on the CPU; the model is on cuda:0"):
        check_int8_support(torch.device("cuda", 0))
    model = EoMTForUniversalSegmentation(tiny_config())
    monkeypatch.setattr(quantization, "ENGINE", "missing")  # as on a build without oneDNN's quantized engine
    with pytest.raises(ValueError, match=r"needs PyTorch's 'missing' quantized engine \(x86 CPUs\); this build has"):
        model.enable_fast_inference("int8")
    assert not any(isinstance(module, Int8Linear) for module in model.modules())


def test_int8_packing_restores_the_quantized_engine(monkeypatch):
    monkeypatch.setattr(torch.backends.quantized, "engine", "x86")
    quantization.pack_int8_weight(torch.randn(8, 4), None)
    assert torch.backends.quantized.engine == "x86"
