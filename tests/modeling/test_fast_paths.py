"""Each fast path in `modeling_eomt.fast_paths` equals the plain computation it replaces."""

import pytest
import torch
import torch.nn.functional as F

from modeling_eomt import EoMTForUniversalSegmentation, fast_paths
from modeling_eomt.fast_paths import (
    CpuFeatures,
    attention,
    attention_by_matmuls,
    band_rows,
    choose_cpu_kernels,
    compute_mask_logits,
    forward_in_bands,
    mask_logits_in_bands,
    mask_logits_on_grid,
    prefers_matmul_attention,
    sdpa_with_query_mask,
)
from tests.modeling.helpers import perturb_, tiny_config, use_cpu_kernels


def random_attention_inputs(batch=2, heads=3, tokens=23, head_dim=8, num_queries=5):
    query, key, value = torch.randn(3, batch, heads, tokens, head_dim).unbind(0)
    query_mask = torch.rand(batch, num_queries, tokens) > 0.4
    query_mask[..., 0] = True  # every query row attends to something, as in the model (queries and prefix tokens)
    return query, key, value, query_mask


def plain_attention(query, key, value, query_mask):
    """SDPA with the query mask spread over a full `(B, 1, T, T)` mask (the other rows attend everywhere)."""
    full_mask = None
    if query_mask is not None:
        full_mask = torch.ones(query.shape[0], 1, query.shape[2], key.shape[2], dtype=torch.bool)
        full_mask[:, 0, : query_mask.shape[1]] = query_mask
    return F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=full_mask)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_bytes", [2**20, 1])  # all heads at once, one head at a time
def test_attention_by_matmuls_equals_sdpa(masked, chunk_bytes, monkeypatch):
    use_cpu_kernels(monkeypatch, attention_chunk_bytes=chunk_bytes)
    query, key, value, query_mask = random_attention_inputs()
    query_mask = query_mask if masked else None
    expected = plain_attention(query, key, value, query_mask)
    actual = attention_by_matmuls(query, key, value, query_mask, scale=query.shape[-1] ** -0.5)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_sdpa_with_query_mask_equals_sdpa_with_the_full_mask():
    query, key, value, query_mask = random_attention_inputs()
    actual = sdpa_with_query_mask(query, key, value, query_mask)
    torch.testing.assert_close(actual, plain_attention(query, key, value, query_mask), atol=1e-6, rtol=1e-6)


# /proc/cpuinfo flags of the machine kinds measured in docs/benchmarks/fast-paths.md, and of older x86 CPUs.
AMD_EPYC_ZEN4 = "fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni".split()
INTEL_XEON_AMX = "fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8".split()
AVX2_ONLY = "fpu sse2 avx avx2 fma".split()  # as AMD EPYC Zen 3
AVX512_NO_VNNI = "fpu sse2 avx avx2 avx512f avx512bw".split()  # as Intel Skylake-SP
AVX_VNNI = "fpu sse2 avx avx2 avx_vnni".split()  # as Intel Alder Lake


def test_cpu_features_are_read_from_the_flags():
    assert CpuFeatures.from_flags(AMD_EPYC_ZEN4) == CpuFeatures(avx512_bf16=True, avx512_vnni=True)
    assert CpuFeatures.from_flags(INTEL_XEON_AMX) == CpuFeatures(
        avx512_bf16=True, amx_bf16=True, avx512_vnni=True, amx_int8=True
    )
    assert CpuFeatures.from_flags(AVX2_ONLY) == CpuFeatures() == CpuFeatures.from_flags(AVX512_NO_VNNI)
    assert CpuFeatures.from_flags(AVX_VNNI) == CpuFeatures(avx_vnni=True)
    assert all(CpuFeatures.from_flags(flags).int8_dot_products for flags in (AMD_EPYC_ZEN4, INTEL_XEON_AMX, AVX_VNNI))
    assert not CpuFeatures().int8_dot_products


@pytest.mark.parametrize(
    "flags, matmul_dtypes, int8_reduce_range",
    [
        (AMD_EPYC_ZEN4, {torch.bfloat16}, False),  # SDPA's kernel runs no faster in bfloat16 than in float32 there
        (INTEL_XEON_AMX, set(), False),  # SDPA's kernel multiplies on the AMX tiles: faster than the matmuls
        (AVX2_ONLY, set(), True),  # no fast bfloat16 matmuls either: SDPA, as transformers; int8 pairs sum in int16
        (AVX512_NO_VNNI, set(), True),
        (AVX_VNNI, set(), False),
    ],
    ids=["avx512_bf16", "amx", "avx2", "avx512-no-vnni", "avx-vnni"],
)
def test_kernels_are_chosen_from_the_cpu_features(flags, matmul_dtypes, int8_reduce_range, monkeypatch):
    kernels = choose_cpu_kernels(CpuFeatures.from_flags(flags))
    assert kernels.matmul_attention_dtypes == matmul_dtypes
    assert kernels.fast_bfloat16 == (flags in (AMD_EPYC_ZEN4, INTEL_XEON_AMX))
    assert kernels.int8_reduce_range == int8_reduce_range
    # the chunk and band sizes depend on the allocator, the same on every machine kind measured
    assert (kernels.attention_chunk_bytes, kernels.upscale_band_bytes) == (4 * 2**20, 8 * 2**20)

    monkeypatch.setattr(fast_paths, "CPU_KERNELS", kernels)
    query = torch.randn(1, 2, 4, 8)
    assert prefers_matmul_attention(query.bfloat16()) == (torch.bfloat16 in matmul_dtypes)
    assert not prefers_matmul_attention(query)  # float32: SDPA everywhere
    assert not prefers_matmul_attention(query.half())  # float16: SDPA everywhere
    assert not prefers_matmul_attention(query.bfloat16(), training=True)  # no dropout in attention_by_matmuls
    assert not prefers_matmul_attention(query.bfloat16().to("meta"))  # not on CPU


def test_this_machine_kernels_come_from_its_cpu_features():
    assert fast_paths.CPU_KERNELS == choose_cpu_kernels(fast_paths.read_cpu_features())


def test_cpu_features_fall_back_to_torch_without_proc_cpuinfo(monkeypatch):
    def no_cpuinfo(path, *args, **kwargs):
        raise FileNotFoundError(path)  # as on macOS and Windows

    monkeypatch.setattr("builtins.open", no_cpuinfo)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True, raising=False)
    assert fast_paths.read_cpu_features() == CpuFeatures(avx512_bf16=True, avx512_vnni=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("matmul_dtypes", [set(), {torch.bfloat16}], ids=["sdpa", "matmuls"])
def test_attention_follows_the_kernel_choice_and_equals_plain_attention(dtype, masked, matmul_dtypes, monkeypatch):
    use_cpu_kernels(monkeypatch, matmul_attention_dtypes=frozenset(matmul_dtypes))
    query, key, value, query_mask = random_attention_inputs()
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    query_mask = query_mask if masked else None
    calls = []
    original = fast_paths.attention_by_matmuls
    monkeypatch.setattr(fast_paths, "attention_by_matmuls", lambda *args: calls.append(1) or original(*args))
    actual = attention(query, key, value, query_mask)
    assert len(calls) == (dtype in matmul_dtypes)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16 keeps 8 bits of mantissa
    expected = plain_attention(query, key, value, query_mask)
    torch.testing.assert_close(actual.float(), expected, atol=tolerance, rtol=tolerance)


def test_compute_mask_logits_is_the_query_pixel_product():
    embeddings = torch.randn(2, 5, 8)
    features = torch.randn(2, 8, 6, 7).contiguous(memory_format=torch.channels_last)
    expected = torch.einsum("bqc,bchw->bqhw", embeddings, features).flatten(2)
    torch.testing.assert_close(compute_mask_logits(embeddings, features), expected, atol=1e-5, rtol=1e-5)
    out = torch.empty(2, 5, 42)
    assert compute_mask_logits(embeddings, features, out=out) is out
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_compute_mask_logits_gradients_are_the_products_and_channels_last(autocast):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 5, 8, generator=generator)
    features = torch.randn(2, 8, 6, 7, generator=generator).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 5, 42, generator=generator)
    gradients = {}
    for name, function in (("fast", compute_mask_logits),
                           ("plain", lambda e, f: torch.einsum("bqc,bchw->bqhw", e, f).flatten(2))):  # fmt: skip
        leaves = (embeddings.clone().requires_grad_(True), features.clone().requires_grad_(True))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = function(*leaves)
        assert logits.dtype == (torch.bfloat16 if autocast else torch.float32)
        (logits.float() * upstream).sum().backward()
        gradients[name] = [leaf.grad for leaf in leaves]
    tolerance = 3e-2 if autocast else 1e-5
    for fast, plain in zip(gradients["fast"], gradients["plain"]):
        assert fast.dtype == torch.float32
        torch.testing.assert_close(fast, plain, atol=tolerance, rtol=tolerance)
    # the feature gradient keeps the features' channels-last layout (autograd's bmm would write it channels-first)
    assert gradients["fast"][1].is_contiguous(memory_format=torch.channels_last)


def upscale_block():
    """An EoMT upscale block with random weights, in eval mode."""
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    return model.upscale_blocks[0]


@pytest.mark.parametrize("height, rows", [(7, 3), (8, 8), (9, 2), (5, 9)])
def test_upscale_in_bands_equals_whole_map(height, rows):
    block = upscale_block()
    features = torch.randn(2, 32, height, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(forward_in_bands(block, features, rows), block(features), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("height, rows", [(7, 3), (8, 8), (5, 9)])
def test_mask_logits_in_bands_equal_the_product_with_the_whole_upscaled_map(height, rows):
    block = upscale_block()
    embeddings = torch.randn(2, 5, 32)
    features = torch.randn(2, 32, height, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = torch.einsum("bqc,bchw->bqhw", embeddings, block(features))
        actual = mask_logits_in_bands(embeddings, block, features, rows)
    assert actual.shape == (2, 5, 2 * height, 12)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_bands_are_used_for_large_maps_on_cpu_without_gradients_only(monkeypatch):
    use_cpu_kernels(monkeypatch, upscale_band_bytes=1024)
    large = torch.randn(1, 8, 64, 4)  # 512 bytes of float32 output per input row, 32 KiB in all
    small = torch.randn(1, 8, 1, 1)  # 128 bytes of output
    with torch.no_grad():
        assert band_rows(large) == 8  # at least 8 input rows, even where a band then holds more than 1024 bytes
        assert band_rows(torch.randn(1, 1, 512, 1)) == 64  # 16 bytes a row: 1024 bytes are 64 rows
        assert band_rows(small) is None
        assert band_rows(large.to("meta")) is None  # not on CPU
    assert band_rows(large) is None  # gradients enabled: whole maps


@pytest.mark.parametrize("scale, grid", [(1, (4, 4)), (2, (3, 5)), (4, (4, 4)), (4, (5, 3)), (8, (2, 3)), (3, (4, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_logits_on_grid_is_bilinear_resizing(scale, grid, dtype):
    logits = torch.randn(2, 7, grid[0] * scale, grid[1] * scale).to(dtype)
    expected = F.interpolate(logits.float(), size=grid, mode="bilinear", align_corners=False)
    resized = mask_logits_on_grid(logits, grid)
    assert resized.dtype == torch.float32 and resized.shape == (2, 7, *grid)
    torch.testing.assert_close(resized, expected, atol=1e-6, rtol=0)
    resized = mask_logits_on_grid(logits, (grid[0] * scale // 2 + 1, 5))  # not a multiple: F.interpolate
    torch.testing.assert_close(resized, F.interpolate(logits.float(), size=resized.shape[-2:], mode="bilinear"))
