"""The speed paths change outputs only within stated tolerances."""

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation, fast_paths
from tests.modeling.helpers import (
    int8_tolerance,
    needs_int8,
    perturb_,
    relative_difference,
    tiny_config,
    use_cpu_kernels,
)

# bfloat16 keeps 8 bits of mantissa: the logits of the tiny models stay within 2% of their largest magnitude. int8 keeps 8
# bits per weight and per activation (one scale per output channel, one per activation tensor) in the linear layers and
# runs the rest, attention included, in bfloat16: within 7% (measured: masks 2%, classes 1.4% and 5.2%); twice that
# where the CPU has no VNNI and the activations take 7 bits (measured on an AMD EPYC Zen 3: 2.4%, 1.8% and 7.0%).
TOLERANCES = {torch.bfloat16: 0.02, "int8": int8_tolerance(0.07)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param("int8", marks=needs_int8)])
@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
def test_fast_inference_stays_close_to_float32(variant, dtype):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant))).eval()
    model.set_attn_mask_probs(0.0)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixel_values)
        assert model.enable_fast_inference(dtype) is model
        actual = model(pixel_values)
    assert actual.masks_queries_logits.dtype == actual.class_queries_logits.dtype == torch.float32
    mask_difference = relative_difference(actual.masks_queries_logits, expected.masks_queries_logits)
    class_difference = relative_difference(actual.class_queries_logits, expected.class_queries_logits)
    print(f"{variant}: {dtype} vs fp32 relative difference: masks {mask_difference:.1e}, classes {class_difference:.1e}")
    assert 0 < mask_difference < TOLERANCES[dtype]  # > 0: the lower precision really ran
    assert 0 < class_difference < TOLERANCES[dtype]


def test_bf16_masked_inference_returns_float32_intermediate_predictions():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).enable_fast_inference(torch.bfloat16)
    model.set_attn_mask_probs(1.0)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert len(out.intermediate_masks_queries_logits) == model.config.num_blocks
    assert all(
        m.dtype == torch.float32 for m in out.intermediate_masks_queries_logits + out.intermediate_class_queries_logits
    )


def test_fast_inference_leaves_training_and_float32_untouched():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config()))
    pixel_values = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        expected_eval = model(pixel_values).masks_queries_logits
    model.train()
    torch.manual_seed(1)
    expected_train = model(pixel_values).masks_queries_logits

    model.enable_fast_inference(torch.bfloat16)
    assert not model.training  # switched to eval mode
    model.train()
    torch.manual_seed(1)
    assert torch.equal(model(pixel_values).masks_queries_logits, expected_train)  # training ignores the switch
    model.enable_fast_inference(None)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).masks_queries_logits, expected_eval)


def test_callers_autocast_applies_without_fast_inference():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 64, 64)).masks_queries_logits.dtype == torch.bfloat16


@pytest.mark.parametrize("fast_bfloat16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_auto_takes_bfloat16_only_where_the_cpu_computes_in_it(monkeypatch, recwarn, fast_bfloat16):
    # Without AVX-512 BF16 or AMX, bfloat16 autocast took 11x the float32 time (AMD EPYC Zen 3): "auto" keeps float32
    use_cpu_kernels(monkeypatch, fast_bfloat16=fast_bfloat16)
    expected = torch.bfloat16 if fast_bfloat16 else None
    assert fast_paths.fast_autocast_dtype(torch.device("cpu")) == expected
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).enable_fast_inference()
    assert model.inference_dtype == expected
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).masks_queries_logits.dtype == torch.float32
    assert not [warning for warning in recwarn if "bfloat16" in str(warning.message)]


def test_bfloat16_asked_for_on_a_cpu_without_it_warns_and_runs(monkeypatch):
    use_cpu_kernels(monkeypatch, fast_bfloat16=False)
    model = EoMTForUniversalSegmentation(tiny_config())
    with pytest.warns(UserWarning, match="CPU without avx512_bf16 or amx_bf16: its matmuls are emulated"):
        model.enable_fast_inference(torch.bfloat16)
    assert model.inference_dtype == torch.bfloat16  # what was asked for


def test_fast_autocast_dtype_on_cuda_and_other_devices(monkeypatch):
    for supported, expected in [(True, torch.bfloat16), (False, torch.float16)]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert fast_paths.fast_autocast_dtype(torch.device("cuda", 0)) == expected
    assert fast_paths.fast_autocast_dtype(torch.device("meta")) is None


def test_fast_inference_rejects_other_dtypes():
    model = EoMTForUniversalSegmentation(tiny_config())
    with pytest.raises(ValueError, match="torch.float64"):
        model.enable_fast_inference(torch.float64)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_banded_inference_gives_the_same_predictions(monkeypatch, dtype):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    pixel_values = torch.randn(2, 3, 256, 256)  # upscale inputs of 16 and 32 rows: several bands of 8
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        expected = model(pixel_values)
        calls, original = [], fast_paths.upscale_bands
        use_cpu_kernels(monkeypatch, upscale_band_bytes=1024)
        monkeypatch.setattr(fast_paths, "upscale_bands", lambda *a: calls.append(a[2]) or original(*a))
        actual = model(pixel_values)
    assert calls == [8] * 2 * (model.config.num_blocks + 1)  # 2 blocks per prediction, intermediate ones too
    assert actual.masks_queries_logits.dtype == expected.masks_queries_logits.dtype == (dtype or torch.float32)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-6, rtol=1e-6)
    for banded, whole in zip(actual.intermediate_masks_queries_logits, expected.intermediate_masks_queries_logits):
        torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-6)
