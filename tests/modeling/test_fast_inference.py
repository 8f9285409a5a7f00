"""The speed paths change outputs only within stated tolerances."""

import pytest
import torch
import torch.nn.functional as F

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.modeling_eomt import attention_by_matmuls, prefers_matmul_attention
from tests.modeling.helpers import perturb_, tiny_config

# bfloat16 keeps 8 bits of mantissa: the logits of the tiny models stay within 2% of their largest magnitude.
BF16_RELATIVE_TOLERANCE = 0.02


def random_attention_inputs(batch=2, heads=3, tokens=23, head_dim=8, num_queries=5):
    query, key, value = torch.randn(3, batch, heads, tokens, head_dim).unbind(0)
    query_mask = torch.rand(batch, num_queries, tokens) > 0.4
    query_mask[..., 0] = True  # every query row attends to something, as in the model (queries and prefix tokens)
    return query, key, value, query_mask


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_bytes", [2**20, 1])  # all heads at once, one head at a time
def test_attention_by_matmuls_equals_sdpa(masked, chunk_bytes, monkeypatch):
    import modeling_eomt.modeling_eomt as modeling

    monkeypatch.setattr(modeling, "ATTENTION_CHUNK_BYTES", chunk_bytes)
    query, key, value, query_mask = random_attention_inputs()
    num_queries = query_mask.shape[1]
    full_mask = None
    if masked:
        full_mask = torch.ones(query.shape[0], 1, query.shape[2], key.shape[2], dtype=torch.bool)
        full_mask[:, 0, :num_queries] = query_mask
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=full_mask)
    actual = attention_by_matmuls(query, key, value, query_mask if masked else None, scale=query.shape[-1] ** -0.5)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_matmul_attention_is_chosen_for_half_precision_on_cpu_only():
    query = torch.randn(1, 2, 4, 8)
    assert not prefers_matmul_attention(query)
    assert prefers_matmul_attention(query.bfloat16())
    assert prefers_matmul_attention(query.half())


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
def test_bf16_fast_inference_stays_close_to_float32(variant):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant))).eval()
    model.attn_mask_probs.zero_()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixel_values)
        assert model.enable_fast_inference(torch.bfloat16) is model
        actual = model(pixel_values)
    assert actual.masks_queries_logits.dtype == actual.class_queries_logits.dtype == torch.float32
    mask_difference = relative_difference(actual.masks_queries_logits, expected.masks_queries_logits)
    class_difference = relative_difference(actual.class_queries_logits, expected.class_queries_logits)
    print(f"{variant}: bf16 vs fp32 relative difference: masks {mask_difference:.1e}, classes {class_difference:.1e}")
    assert 0 < mask_difference < BF16_RELATIVE_TOLERANCE  # > 0: bfloat16 really ran
    assert 0 < class_difference < BF16_RELATIVE_TOLERANCE


def test_bf16_masked_inference_returns_float32_intermediate_predictions():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).enable_fast_inference(torch.bfloat16)
    model.attn_mask_probs.fill_(1.0)
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


def test_fast_inference_rejects_other_dtypes():
    model = EoMTForUniversalSegmentation(tiny_config())
    with pytest.raises(ValueError, match="torch.float64"):
        model.enable_fast_inference(torch.float64)


@pytest.mark.parametrize("height, rows", [(7, 3), (8, 8), (9, 2), (5, 9)])
def test_upscale_in_bands_equals_whole_map(height, rows):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    block = model.upscale_blocks[0]
    features = torch.randn(2, 32, height, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(block.forward_in_bands(features, rows), block(features), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_banded_inference_gives_the_same_predictions(monkeypatch, dtype):
    import modeling_eomt.modeling_eomt as modeling

    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    pixel_values = torch.randn(2, 3, 256, 256)  # upscale inputs of 16 and 32 rows: several bands of 8
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        expected = model(pixel_values)
        calls, original = [], modeling.EoMTUpscaleBlock.bands
        monkeypatch.setattr(modeling, "UPSCALE_BAND_BYTES", 1024)
        monkeypatch.setattr(modeling.EoMTUpscaleBlock, "bands", lambda *a: calls.append(a[2]) or original(*a))
        actual = model(pixel_values)
    assert calls == [8] * 2 * (model.config.num_blocks + 1)  # 2 blocks per prediction, intermediate ones too
    assert actual.masks_queries_logits.dtype == expected.masks_queries_logits.dtype == (dtype or torch.float32)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-6, rtol=1e-6)
    for banded, whole in zip(actual.intermediate_masks_queries_logits, expected.intermediate_masks_queries_logits):
        torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-6)
