"""Faster ways to compute parts of the EoMT forward pass: pure functions, each equal to a plain computation up to float
rounding (tests/modeling/test_fast_paths.py checks every one against it).

- Kernel choice per machine: `choose_cpu_kernels` decides, from the CPU's instruction-set extensions (`CpuFeatures`),
  whether bfloat16 is fast, which attention kernel each precision uses, the int8 activation range and the chunk and
  band sizes; `CPU_KERNELS` holds its choice for this machine, made once at import; `fast_autocast_dtype` names the
  fastest autocast dtype of a device.
- Attention: `attention` picks the kernel (`prefers_matmul_attention` is the one place that decides), attends the
  masked query rows apart from the others (`sdpa_with_query_mask`), or uses two matmuls per group of heads
  (`attention_by_matmuls`) where SDPA has no fast half-precision kernel.
- Mask logits: `compute_mask_logits` is the query-pixel product as one batched matmul over channels-last features
  (in training, `ChannelsLastMaskLogits` keeps their gradient channels-last too);
  `band_rows`, `upscale_bands`, `forward_in_bands` and `mask_logits_in_bands` upscale large maps band by band at
  inference on CPU; `mask_logits_on_grid` resizes mask logits to the patch grid for masked attention.

Why each is faster, and by how much on which machine: docs/benchmarks/fast-paths.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

# `attention_by_matmuls` handles as many heads at once as keep their attention logits within this many bytes (at
# least one head): small enough for the allocator to reuse the blocks freed by the previous chunk instead of mapping
# fresh pages for every chunk.
ATTENTION_CHUNK_BYTES = 4 * 2**20

# Inference on CPU upscales a map in bands of about this many output bytes once its output exceeds four times as
# many (`band_rows`).
UPSCALE_BAND_BYTES = 8 * 2**20


# ----------------------------------------------------------------------------------------------------------------------
# Kernel choice per machine
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's instruction-set extensions that decide which kernel is faster (named as in /proc/cpuinfo's flags)."""

    avx512_bf16: bool = False  # bfloat16 dot products in vector registers (AMD Zen 4 and later, Intel Cooper Lake)
    amx_bf16: bool = False  # bfloat16 tile matrix multiplies (Intel Sapphire Rapids and later)
    avx512_vnni: bool = False  # int8 dot products summed in int32 (AMD Zen 4 and later, Intel Cascade Lake and later)
    avx_vnni: bool = False  # the same in 256-bit registers (Intel Alder Lake and later)
    amx_int8: bool = False  # int8 tile matrix multiplies (Intel Sapphire Rapids and later)

    @property
    def int8_dot_products(self) -> bool:
        """Whether the CPU sums int8 products in int32 (VNNI or AMX) rather than in saturating int16 pairs."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    @classmethod
    def from_flags(cls, flags: Iterable[str]) -> CpuFeatures:
        present = set(flags)
        return cls(**{field.name: field.name in present for field in fields(cls)})


def read_cpu_features() -> CpuFeatures:
    """This machine's `CpuFeatures`: from /proc/cpuinfo on Linux, else from torch's own checks."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return CpuFeatures.from_flags(line.partition(":")[2].split())
    except OSError:
        pass
    checks = {
        "avx512_bf16": "_is_avx512_bf16_supported",
        "amx_bf16": "_is_amx_tile_supported",
        "avx512_vnni": "_is_vnni_supported",
        "amx_int8": "_is_amx_tile_supported",
    }
    return CpuFeatures(**{name: bool(getattr(torch.cpu, check, lambda: False)()) for name, check in checks.items()})


@dataclass(frozen=True)
class CpuKernels:
    """Which kernel each CPU fast path uses on one kind of machine (`choose_cpu_kernels`)."""

    matmul_attention_dtypes: frozenset[torch.dtype] = frozenset()  # inference dtypes attended by `attention_by_matmuls`
    fast_bfloat16: bool = True  # bfloat16 matmuls run faster than float32 (`fast_autocast_dtype`)
    int8_reduce_range: bool = False  # `quantization.Int8Linear` quantises its activations to 7 bits instead of 8
    attention_chunk_bytes: int = ATTENTION_CHUNK_BYTES  # logits per chunk of heads in `attention_by_matmuls`
    upscale_band_bytes: int = UPSCALE_BAND_BYTES  # output bytes per band of `band_rows`


def choose_cpu_kernels(features: CpuFeatures) -> CpuKernels:
    """The CPU kernels for a machine with `features`.

    - bfloat16 attention by matmuls where the CPU has AVX-512 BF16 but no AMX: there SDPA's flash-attention kernel runs
      no faster in bfloat16 than in float32, while the matmuls run at the bfloat16 dot-product rate. With AMX, SDPA's
      kernel multiplies on the tiles and beats the matmuls. Everywhere else (float16, CPUs without either extension)
      SDPA, the kernel transformers' model uses, so no choice here can be slower than it at the same precision.
    - bfloat16 is fast only with AVX-512 BF16 or AMX. Without either, oneDNN converts bfloat16 to float32 for every
      product: ViT-S/16 at 640 px under bfloat16 autocast took 11x its float32 time (AMD EPYC Zen 3, AVX2 only), so
      there `enable_fast_inference` stays in float32 unless bfloat16 is asked for by name.
    - int8 activations in 7 bits where the CPU has neither VNNI nor AMX: there oneDNN multiplies uint8 activations by
      int8 weights with `vpmaddubsw`, which adds each pair of products in int16 and saturates (2 x 255 x 127 > 32767),
      so 8-bit activations gave a linear layer's output off by 36% of its scale (AMD EPYC Zen 3, AVX2 only). With 7
      bits no pair can overflow (2 x 127 x 127 < 32767), and the output is that of exact integer arithmetic.
    - The chunk and band sizes keep each temporary within blocks that glibc's allocator reuses: a property of the
      allocator, not of the instruction set, and the same sizes are fastest on every machine kind measured.
    """
    matmul_dtypes = {torch.bfloat16} if features.avx512_bf16 and not features.amx_bf16 else set()
    return CpuKernels(
        matmul_attention_dtypes=frozenset(matmul_dtypes),
        fast_bfloat16=features.avx512_bf16 or features.amx_bf16,
        int8_reduce_range=not features.int8_dot_products,
    )


# This machine's kernels, chosen at import: compiled and exported graphs read them as constants.
CPU_KERNELS = choose_cpu_kernels(read_cpu_features())


def fast_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype that runs faster than float32 on `device`: bfloat16 on CUDA devices that compute in it (else
    float16) and on CPUs with `CPU_KERNELS.fast_bfloat16`; None (float32) on other CPUs and devices."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if device.type == "cpu" and CPU_KERNELS.fast_bfloat16:
        return torch.bfloat16
    return None


def bfloat16_is_emulated(device: torch.device) -> bool:
    """Whether bfloat16 matmuls on `device` run emulated, several times slower than float32: on CPUs without
    `CPU_KERNELS.fast_bfloat16`."""
    return device.type == "cpu" and not CPU_KERNELS.fast_bfloat16


def exporting() -> bool:
    """Whether torch.export is tracing the caller (torch >= 2.6 tells; older versions never export the model)."""
    return getattr(torch.compiler, "is_exporting", lambda: False)()


# ----------------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------------


def prefers_matmul_attention(query: Tensor, training: bool = False) -> bool:
    """Whether `attention` computes `query`'s attention with `attention_by_matmuls` instead of SDPA: at inference on
    CPU in the dtypes that `CPU_KERNELS` names for this machine. In training SDPA stays (`attention_by_matmuls` has no
    dropout)."""
    return not training and query.device.type == "cpu" and query.dtype in CPU_KERNELS.matmul_attention_dtypes


def attention(
    query: Tensor, key: Tensor, value: Tensor, query_mask: Tensor | None, dropout: float = 0.0, training: bool = False
) -> Tensor:
    """`softmax(q k^T / sqrt(D)) v` with dropout, the first Q query rows masked by `query_mask` if given.

    Args:
        query, key, value: `(B, heads, T, D)`.
        query_mask: `(B, Q, T)` bool, True = may attend, for the first Q query rows, or None.
    Returns:
        `(B, heads, T, D)`, possibly a view of a `(B, T, heads, D)` tensor.
    """
    if prefers_matmul_attention(query, training):
        return attention_by_matmuls(query, key, value, query_mask, query.shape[-1] ** -0.5)
    if query_mask is None:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
    return sdpa_with_query_mask(query, key, value, query_mask, dropout)


def sdpa_with_query_mask(query: Tensor, key: Tensor, value: Tensor, query_mask: Tensor, dropout: float = 0.0) -> Tensor:
    """SDPA with the first Q query rows masked by `query_mask` `(B, Q, T)`: those rows are attended with the mask and
    every other row on the mask-free path, which can use the fused kernels that an explicit mask rules out.

    Returns `(B, heads, T, D)`, a view of a `(B, T, heads, D)` tensor (the layout the output projection reads)."""
    num_queries = query_mask.shape[1]
    masked = F.scaled_dot_product_attention(
        query[:, :, :num_queries], key, value, attn_mask=query_mask[:, None], dropout_p=dropout
    )
    free = F.scaled_dot_product_attention(query[:, :, num_queries:], key, value, dropout_p=dropout)
    return torch.cat((masked.transpose(1, 2), free.transpose(1, 2)), dim=1).transpose(1, 2)


def attention_by_matmuls(query: Tensor, key: Tensor, value: Tensor, query_mask: Tensor | None, scale: float) -> Tensor:
    """`softmax(q k^T * scale) v` with two matmuls per group of heads (logits of at most `cpu_kernels()`'s
    `attention_chunk_bytes`).

    Args:
        query, key, value: `(B, heads, T, D)`.
        query_mask: `(B, Q, T)` bool, True = may attend, for the first Q query rows, or None.
    Returns:
        `(B, heads, T, D)`, a view of a `(B, T, heads, D)` tensor.
    """
    batch, heads, tokens, _ = query.shape
    chunk_bytes = CPU_KERNELS.attention_chunk_bytes
    heads_per_chunk = max(1, chunk_bytes // (batch * tokens * key.shape[2] * query.element_size()))
    blocked = None if query_mask is None else ~query_mask[:, None]  # (B, 1, Q, T)
    query = query * scale
    outputs = []
    for start in range(0, heads, heads_per_chunk):
        chunk = slice(start, start + heads_per_chunk)
        logits = query[:, chunk] @ key[:, chunk].transpose(-1, -2)  # (B, h, T, T)
        if blocked is not None:
            logits[:, :, : blocked.shape[2]].masked_fill_(blocked, float("-inf"))
        outputs.append((logits.softmax(dim=-1) @ value[:, chunk]).transpose(1, 2))  # (B, T, h, D)
    return torch.cat(outputs, dim=2).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------------
# Mask logits
# ----------------------------------------------------------------------------------------------------------------------


def compute_mask_logits(mask_embeddings: Tensor, pixel_features: Tensor, out: Tensor | None = None) -> Tensor:
    """`einsum("bqc,bchw->bqhw")` of `(B, Q, C)` embeddings and channels-last `(B, C, H, W)` features, flattened to
    `(B, Q, H * W)`: one batched matmul that reads the features in place, into `out` if given. In training the
    gradient of the features comes out channels-last too (`ChannelsLastMaskLogits`)."""
    pixel_rows = pixel_features.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H * W, C), a view
    if out is not None:
        return torch.bmm(mask_embeddings.to(out.dtype), pixel_rows.transpose(1, 2).to(out.dtype), out=out)
    if torch.is_grad_enabled() and pixel_rows.requires_grad and not exporting():
        return ChannelsLastMaskLogits.apply(mask_embeddings, pixel_rows)
    return torch.bmm(mask_embeddings, pixel_rows.transpose(1, 2))


class ChannelsLastMaskLogits(torch.autograd.Function):
    """`bmm(embeddings (B, Q, C), pixel_rows (B, H * W, C)^T)` whose backward writes the pixel gradient `(B, H * W, C)`,
    the channels-last layout of the features. Autograd's `bmm` backward would write it `(B, C, H * W)`: a
    channels-first gradient that turns every later step of the upscale blocks' backward (LayerNorm, depthwise and
    transposed convolutions, GELU) into a mixed-layout one, with a layout copy at the largest map (2-3% of a CPU
    training step of a small model, docs/benchmarks/fast-paths.md)."""

    @staticmethod
    def forward(ctx, mask_embeddings: Tensor, pixel_rows: Tensor) -> Tensor:
        ctx.save_for_backward(mask_embeddings, pixel_rows)
        return torch.bmm(mask_embeddings, pixel_rows.transpose(1, 2))  # (B, Q, H * W)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        mask_embeddings, pixel_rows = ctx.saved_tensors
        embeddings_grad = rows_grad = None
        # Under autocast the forward ran in half precision: so does the backward, each gradient in its input's dtype.
        if ctx.needs_input_grad[0]:
            embeddings_grad = torch.bmm(grad, pixel_rows.to(grad.dtype)).to(mask_embeddings.dtype)  # (B, Q, C)
        if ctx.needs_input_grad[1]:
            rows_grad = torch.bmm(grad.transpose(1, 2), mask_embeddings.to(grad.dtype)).to(pixel_rows.dtype)  # (B, HW, C)
        return embeddings_grad, rows_grad


def band_rows(pixel_features: Tensor) -> int | None:
    """Input rows per band for a 2x upscaling of `pixel_features` `(B, C, h, w)`, or None to upscale the whole map.

    Bands are used on CPU without gradients once the output exceeds four bands (`CPU_KERNELS`'s
    `upscale_band_bytes` each): each full-size activation of such a map would be fresh memory that the OS maps page by
    page, while a band's fits in blocks the allocator reuses. A band holds about `upscale_band_bytes` of output, at
    least 8 input rows. Never under torch.export: the exported graph keeps the plain computation for any input size."""
    if torch.is_grad_enabled() or pixel_features.device.type != "cpu" or exporting():
        return None
    batch, channels, height, width = pixel_features.shape
    row_bytes = batch * channels * 4 * width * pixel_features.element_size()  # output bytes per input row
    band_bytes = CPU_KERNELS.upscale_band_bytes
    if height * row_bytes <= 4 * band_bytes:
        return None
    return max(8, band_bytes // row_bytes)


def upscale_bands(
    upscale: Callable[[Tensor], Tensor], hidden_states: Tensor, rows: int
) -> Iterator[tuple[int, int, Tensor]]:
    """`upscale(hidden_states)` on bands of `rows` input rows: yields `(start, stop, output rows 2 * start to
    2 * stop)`.

    `upscale` must be a 2x upscaling whose output rows depend on the input rows at most one away (EoMT's upscale
    block: a 2x2 stride-2 transposed convolution, a 3x3 convolution and per-pixel operations). Each band is computed
    with one halo row per side, whose outputs are dropped, so no activation is larger than a band."""
    height = hidden_states.shape[-2]
    for start in range(0, height, rows):
        stop = min(start + rows, height)
        low, high = max(start - 1, 0), min(stop + 1, height)
        band = upscale(hidden_states[:, :, low:high])  # (B, C, 2 * (high - low), 2w)
        yield start, stop, band[:, :, 2 * (start - low) : 2 * (stop - low)]


def forward_in_bands(upscale: Callable[[Tensor], Tensor], hidden_states: Tensor, rows: int) -> Tensor:
    """`upscale(hidden_states)` assembled from `upscale_bands`."""
    return torch.cat([band for _, _, band in upscale_bands(upscale, hidden_states, rows)], dim=2)


def mask_logits_in_bands(
    mask_embeddings: Tensor, upscale: Callable[[Tensor], Tensor], pixel_features: Tensor, rows: int
) -> Tensor:
    """`(B, Q, 2h, 2w)` mask logits of `mask_embeddings` `(B, Q, C)` and `upscale(pixel_features)`, computed band by
    band (`upscale_bands`) straight into the output: no full-size feature map and no concatenation."""
    batch, _, height, width = pixel_features.shape
    dtype = mask_embeddings.dtype  # what bmm would return: autocast's dtype under autocast
    if torch.is_autocast_enabled(mask_embeddings.device.type):
        dtype = torch.get_autocast_dtype(mask_embeddings.device.type)
    mask_logits = mask_embeddings.new_empty(batch, mask_embeddings.shape[1], 4 * height * width, dtype=dtype)
    for start, stop, features in upscale_bands(upscale, pixel_features, rows):  # (B, C, 2 (stop - start), 2w)
        band = mask_logits[:, :, 4 * start * width : 4 * stop * width]  # output rows 2 start .. 2 stop
        compute_mask_logits(mask_embeddings, features, out=band)
    return mask_logits.unflatten(2, (2 * height, 2 * width))


def mask_logits_on_grid(mask_logits: Tensor, grid: tuple[int, int]) -> Tensor:
    """`F.interpolate(mask_logits, size=grid, mode="bilinear", align_corners=False)` in float32: `(B, Q, H, W)` mask
    logits resized to the patch grid `(h, w)`.

    The upscale blocks make `H, W` an even multiple `s` of the grid, and then grid cell `(i, j)` samples the input at
    `(s * i + s / 2 - 1/2, s * j + s / 2 - 1/2)`: the mean of the 2 x 2 logits in the middle of its `s x s` block,
    read here through strided views (F.interpolate copies the whole map first). Other sizes go through
    F.interpolate."""
    height, width = mask_logits.shape[-2:]
    scale = height // grid[0]
    if (height, width) == tuple(grid):
        return mask_logits.float()
    if scale % 2 or (height, width) != (grid[0] * scale, grid[1] * scale):
        return F.interpolate(mask_logits.float(), size=grid, mode="bilinear", align_corners=False)
    first = scale // 2 - 1  # the upper / left of the two middle rows / columns of a block

    def corner(row: int, column: int) -> Tensor:  # (B, Q, h, w)
        return mask_logits[..., first + row :: scale, first + column :: scale].float()

    return ((corner(0, 0) + corner(0, 1)) + (corner(1, 0) + corner(1, 1))) * 0.25
