"""The static inference path (`enable_fast_inference(static_shape=...)`): the ordinary forward's outputs on a snapshot
of the weights, for one input shape; on CUDA replayed as a CUDA graph (the tests marked `cuda`)."""

import copy

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.static_inference import ATTENTION_BACKENDS, fastest_attention_backend
from tests.modeling.helpers import perturb_, tiny_config

SHAPE = (2, 64, 64)


def tiny_model(device: str = "cpu", probability: float = 0.0) -> EoMTForUniversalSegmentation:
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).to(device).eval()
    model.set_attn_mask_probs(probability)
    return model


def ordinary_output(model, pixel_values, dtype):
    """The output of the path without `static_shape` (autocast `dtype`) for the model's current weights."""
    model.enable_fast_inference(dtype)
    with torch.no_grad():
        return model(pixel_values)


def relative_difference(actual, expected) -> float:
    return max(
        ((getattr(actual, name) - getattr(expected, name)).abs().max() / getattr(expected, name).abs().max()).item()
        for name in ("class_queries_logits", "masks_queries_logits")
    )


@pytest.mark.parametrize("probability", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_static_path_gives_the_ordinary_outputs(dtype, probability):
    model = tiny_model(probability=probability)
    pixel_values = torch.randn(2, 3, 64, 64)
    expected = ordinary_output(model, pixel_values, dtype)
    model.enable_fast_inference(dtype, static_shape=SHAPE)
    with torch.no_grad():
        actual = model(pixel_values)
    assert list(actual.keys()) == list(expected.keys())  # intermediate predictions only for masked blocks
    for name, value in expected.items():
        values = value if isinstance(value, tuple) else (value,)
        for got, wanted in zip(actual[name] if isinstance(value, tuple) else (actual[name],), values):
            assert got.dtype == wanted.dtype
            torch.testing.assert_close(got, wanted, atol=1e-5, rtol=1e-5)  # the weights cast once, as autocast does


def test_static_path_runs_on_a_snapshot_of_the_weights():
    model = tiny_model().enable_fast_inference(None, static_shape=SHAPE)
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:])
    with torch.no_grad():
        first = model(pixel_values).masks_queries_logits
        perturb_(model)  # weights changed after the set-up: not seen
        again = model(pixel_values).masks_queries_logits
        torch.testing.assert_close(again, first, atol=0, rtol=0)
        other_shape = model(pixel_values[:1]).masks_queries_logits  # the ordinary path, on the current weights
        model.enable_fast_inference(None, static_shape=SHAPE)  # a new snapshot
        renewed = model(pixel_values).masks_queries_logits
    assert not torch.allclose(renewed, first)
    torch.testing.assert_close(renewed[:1], other_shape, atol=1e-5, rtol=1e-5)


def test_changed_probabilities_take_the_ordinary_path():
    model = tiny_model().enable_fast_inference(None, static_shape=SHAPE)
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:])
    with torch.no_grad():
        assert model(pixel_values).intermediate_masks_queries_logits is None  # mask-free at the set-up
        model.set_attn_mask_probs(1.0)
        masked = model(pixel_values)
    assert len(masked.intermediate_masks_queries_logits) == model.config.num_blocks
    expected = ordinary_output(model, pixel_values, None)
    torch.testing.assert_close(masked.masks_queries_logits, expected.masks_queries_logits)


def test_outputs_are_fresh_float32_tensors_with_patch_offsets():
    model = tiny_model().enable_fast_inference(torch.bfloat16, static_shape=SHAPE)
    first_input, second_input = torch.randn(2, *SHAPE[:1], 3, *SHAPE[1:])
    offsets = [torch.tensor([0, 0, 64])]
    with torch.no_grad():
        first = model(first_input, patch_offsets=offsets)
        kept = first.masks_queries_logits.clone()
        second = model(second_input, return_dict=False)
    assert first.patch_offsets is offsets
    assert first.masks_queries_logits.dtype == first.class_queries_logits.dtype == torch.float32
    torch.testing.assert_close(first.masks_queries_logits, kept, atol=0, rtol=0)  # not overwritten by the second
    assert isinstance(second, tuple) and not torch.allclose(second[1], kept)


def test_compiled_blocks_share_one_compilation_and_leave_the_model_as_it_was():
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    model = tiny_model()
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:])
    expected = ordinary_output(model, pixel_values, None)
    torch.compiler.reset()
    model.enable_fast_inference(None, compile=counting_backend, static_shape=SHAPE)
    with torch.no_grad():
        actual = model(pixel_values)
    # 3 blocks, 2 token counts (before and after the queries join): 2 compilations
    assert model.config.num_hidden_layers == 3 and len(graphs) == 2
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-6, rtol=1e-6)
    assert all(block._compiled_call_impl is None for block in model.eomt.layers)  # training runs the blocks as they are


def test_bad_static_shapes_are_named():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"static_shape must be three integers \(batch, height, width\), got \(64,"):
        model.enable_fast_inference(static_shape=(64, 64))
    with pytest.raises(ValueError, match=r"multiples of patch_size=16, got \(1, 64, 60\)"):
        model.enable_fast_inference(static_shape=(1, 64, 60))
    with pytest.raises(ValueError, match="compile must be True, False or a torch.compile backend"):
        model.enable_fast_inference(compile="")


def test_a_copied_model_sets_up_its_own_static_path():
    model = tiny_model().enable_fast_inference(None, static_shape=SHAPE)
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:])
    with torch.no_grad():
        expected = model(pixel_values).masks_queries_logits
        copied = copy.deepcopy(model)
        assert copied.static_inference.model is copied
        torch.testing.assert_close(copied(pixel_values).masks_queries_logits, expected, atol=0, rtol=0)


def test_attention_kernel_is_chosen_on_cuda_only():
    assert fastest_attention_backend((1, 2, 16, 8), torch.float16, torch.device("cpu")) is None


# ----------------------------------------------------------------------------------------------------------------------
# CUDA (benchmarks/gpu_check.sh runs these)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_cuda_graph_replays_the_ordinary_forward(probability):
    model = tiny_model("cuda", probability)
    inputs = torch.randn(2, *SHAPE[:1], 3, *SHAPE[1:], device="cuda")
    expected = [ordinary_output(model, pixel_values, None) for pixel_values in inputs]
    model.enable_fast_inference(None, static_shape=SHAPE)
    with torch.inference_mode():
        actual = [model(pixel_values) for pixel_values in inputs]  # the second replay leaves the first output alone
    assert model.static_inference.uses_cuda_graph
    for got, wanted in zip(actual, expected):
        torch.testing.assert_close(got.masks_queries_logits, wanted.masks_queries_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.class_queries_logits, wanted.class_queries_logits, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():  # another batch size: the ordinary path
        torch.testing.assert_close(model(inputs[0][:1]).masks_queries_logits, expected[0].masks_queries_logits[:1],
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


@pytest.mark.cuda
def test_cuda_graph_with_compiled_blocks_in_float16_stays_close_to_float32():
    model = tiny_model("cuda")
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:], device="cuda")
    expected = ordinary_output(model, pixel_values, None)
    # aot_eager: dynamo's graphs run inside the CUDA graph (inductor's code: gpu-fps in benchmarks/gpu_check.sh)
    model.enable_fast_inference(torch.float16, compile="aot_eager", static_shape=SHAPE)
    with torch.inference_mode():
        actual = model(pixel_values)
        again = model(pixel_values)
    static = model.static_inference
    assert static.uses_cuda_graph and static.blocks_compiled
    assert static.attention_backend in ATTENTION_BACKENDS
    assert 0 < relative_difference(actual, expected) < 1e-2  # > 0: float16 really ran
    torch.testing.assert_close(again.masks_queries_logits, actual.masks_queries_logits, atol=0, rtol=0)


@pytest.mark.cuda
def test_blocks_that_fail_to_compile_are_captured_uncompiled():
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("no code for this graph")

    model = tiny_model("cuda")
    pixel_values = torch.randn(*SHAPE[:1], 3, *SHAPE[1:], device="cuda")
    expected = ordinary_output(model, pixel_values, None)
    torch.compiler.reset()
    model.enable_fast_inference(None, compile=failing_backend, static_shape=SHAPE)
    expected_warning = "captured uncompiled blocks with .* attention instead, after blocks compiled by failing_backend"
    with pytest.warns(UserWarning, match=expected_warning):
        with torch.inference_mode():
            actual = model(pixel_values)
    assert model.static_inference.uses_cuda_graph and not model.static_inference.blocks_compiled
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_fastest_attention_kernel_on_cuda_runs_the_shape():
    assert fastest_attention_backend((1, 6, 1805, 64), torch.float16, torch.device("cuda")) in ATTENTION_BACKENDS
    # float32: flash and cuDNN attention do not take it, the memory-efficient kernel does
    assert fastest_attention_backend((1, 2, 77, 16), torch.float32, torch.device("cuda")) == "EFFICIENT_ATTENTION"
