"""Static-shape inference: EoMT's inference forward pass for one fixed input shape, set up once and then run with
almost no per-call work (`EoMTForUniversalSegmentation.enable_fast_inference(static_shape=(B, H, W))`).

At the first call with an input of that shape, `StaticInference` sets up:
- a snapshot of the weights: those of the linear and convolution layers in the inference dtype (what autocast would
  cast them to at every call), the others as they are; the snapshot is what runs, so later changes to the model's
  weights or `attn_mask_probs` are not seen (`enable_fast_inference` again takes a new snapshot);
- on CUDA, the fastest SDPA kernel for the model's attention shape, by a one-time measurement
  (`fastest_attention_backend`: flash, cuDNN or memory-efficient attention, each checked against the math kernel);
- with `compile`, the transformer blocks compiled with `torch.compile` (regional compilation: the blocks share one
  compiled graph per token count, so compiling costs about one block instead of the whole model);
- on CUDA, the whole forward pass (embeddings, blocks, heads, under autocast) captured as one CUDA graph.
Each call then copies the input into the graph's input buffer, replays the graph and copies the outputs out (logits in
float32): no Python per block, no kernel launches from Python and no host-device synchronisation. On the CPU the same
forward runs directly (there is no graph to replay).

It also reads the other options of `enable_fast_inference` (`inference_autocast_dtype`, `compile_forward`). This module
never imports `modeling_eomt.modeling_eomt`: it drives the model through `model._forward`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fast_paths

# Calls before the capture: compilation, autotuning, cuBLAS / cuDNN handles and lazily loaded kernels all happen in
# these, never inside the capture.
WARMUP_CALLS = 3

# SDPA kernels `fastest_attention_backend` chooses from, by their `torch.nn.attention.SDPBackend` names.
ATTENTION_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")

# Modules whose weights autocast casts to the inference dtype at every call; the snapshot holds them cast once.
_CAST_MODULES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


# ----------------------------------------------------------------------------------------------------------------------
# The options of `enable_fast_inference`
# ----------------------------------------------------------------------------------------------------------------------


INT8 = ("int8", torch.qint8)  # the `dtype`s of int8 inference (`quantization`)
AUTO = "auto"  # the `dtype` of the device's fastest autocast (`fast_paths.fast_autocast_dtype`)


def inference_autocast_dtype(
    dtype: torch.dtype | str | None, static_shape: Sequence[int] | None, device: torch.device
) -> torch.dtype | None:
    """The autocast dtype of `enable_fast_inference(dtype, static_shape=...)` for a model on `device`: `dtype`
    (bfloat16, float16, or None for float32); for "auto", and for int8 (the layers that stay in floating point), the
    device's fastest (`fast_paths.fast_autocast_dtype`: None on CPUs without fast bfloat16). A `ValueError` for any
    other `dtype`, or for int8 with a `static_shape`; a warning for bfloat16 on a CPU without fast bfloat16."""
    int8 = dtype in INT8
    if not int8 and dtype not in (AUTO, None, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be 'auto', torch.bfloat16, torch.float16, 'int8' or None, got {dtype}")
    if int8 and static_shape is not None:
        raise ValueError("static_shape is a CUDA path for float16 / bfloat16 / float32; int8 is CPU only")
    if int8 or dtype == AUTO:
        return fast_paths.fast_autocast_dtype(device)
    if dtype == torch.bfloat16 and fast_paths.bfloat16_is_emulated(device):
        warnings.warn(
            "bfloat16 inference on a CPU without avx512_bf16 or amx_bf16: its matmuls are emulated, several times "
            "slower than float32 (ViT-S/16, 640 px: 11x on an AMD EPYC Zen 3). enable_fast_inference('auto') keeps "
            "float32 on such CPUs",
            stacklevel=3,
        )
    return dtype


def check_static_shape(static_shape: Sequence[int], patch_size: int) -> tuple[int, int, int]:
    """`static_shape` as `(batch, height, width)`; a `ValueError` that names the problem otherwise."""
    values = tuple(static_shape) if isinstance(static_shape, (tuple, list, torch.Size)) else ()
    if len(values) != 3 or not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise ValueError(f"static_shape must be three integers (batch, height, width), got {static_shape!r}")
    batch, height, width = values
    if batch < 1 or height < 1 or width < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"static_shape (batch, height, width) needs a positive batch and a height and width that are positive "
            f"multiples of patch_size={patch_size}, got {tuple(static_shape)}"
        )
    return batch, height, width


def compile_backend(compile: bool | str | Callable) -> str | Callable | None:
    """The `torch.compile` backend that `compile` names: "inductor" for True, None for False, else `compile` itself (a
    backend name or a backend function)."""
    if compile is True:
        return "inductor"
    if compile is False or compile is None:
        return None
    if not callable(compile) and not (isinstance(compile, str) and compile):
        raise ValueError(f"compile must be True, False or a torch.compile backend (name or function), got {compile!r}")
    return compile


def compile_forward(forward: Callable, compile: bool | str | Callable) -> Callable | None:
    """`forward` under `torch.compile` with the backend `compile` names (`compile_backend`), inductor with the weights
    frozen into the graph (`freezing`); None when `compile` is False."""
    backend = compile_backend(compile)
    if backend is None:
        return None
    options = {"options": {"freezing": True}} if backend == "inductor" else {}
    return torch.compile(forward, backend=backend, **options)


# ----------------------------------------------------------------------------------------------------------------------
# Attention kernel
# ----------------------------------------------------------------------------------------------------------------------


def fastest_attention_backend(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device, repeats: int = 10
) -> str | None:
    """The name of the fastest SDPA kernel (of `ATTENTION_BACKENDS`) for query, key and value of `shape` `(B, heads,
    T, D)` in `dtype` on `device`, measured once; only kernels that run and agree with the math kernel (within 2% of
    the output's scale) compete. None on the CPU, or when none of them runs."""
    if device.type != "cuda":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    generator = torch.Generator(device).manual_seed(0)
    query, key, value = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        expected = F.scaled_dot_product_attention(query.float(), key.float(), value.float())
    timings = {}
    for name in ATTENTION_BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with warnings.catch_warnings(), sdpa_kernel(backend):
                warnings.simplefilter("ignore")  # "no available kernel" explanations
                actual = F.scaled_dot_product_attention(query, key, value)
                if (actual.float() - expected).abs().max() > 0.02 * expected.abs().max():
                    continue
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(repeats):
                    F.scaled_dot_product_attention(query, key, value)
                end.record()
                end.synchronize()
        except RuntimeError:  # this kernel does not support the shape, dtype or GPU
            continue
        timings[name] = start.elapsed_time(end)
    return min(timings, key=timings.get) if timings else None


def attention_kernel(name: str | None) -> contextlib.AbstractContextManager:
    """`torch.nn.attention.sdpa_kernel` restricted to the backend `name`, or nothing for None."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, name))


# ----------------------------------------------------------------------------------------------------------------------
# The forward pass on a snapshot of the weights
# ----------------------------------------------------------------------------------------------------------------------


def snapshot_weights(model: nn.Module, dtype: torch.dtype | None) -> dict[str, Tensor]:
    """A detached copy of every parameter and buffer of `model` by name; the weights of linear and convolution layers
    in `dtype` when given."""
    cast = set()
    if dtype is not None:
        for prefix, module in model.named_modules():
            if isinstance(module, _CAST_MODULES):
                names = (name for name, _ in module.named_parameters(recurse=False))
                cast.update(f"{prefix}.{name}" if prefix else name for name in names)
    weights = {}
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        weights[name] = tensor.detach().to(dtype) if name in cast else tensor.detach().clone()
    return weights


class _InferenceForward(nn.Module):
    """`model._forward` on pixel values alone with fixed masked-attention probabilities, as a module that
    `torch.func.functional_call` can run on a snapshot of the weights (parameter names prefixed with `model.`)."""

    def __init__(self, model: nn.Module, attn_mask_probs: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.attn_mask_probs = attn_mask_probs

    def forward(self, pixel_values: Tensor) -> Any:
        return self.model._forward(pixel_values, self.attn_mask_probs, None, False, False)


@contextlib.contextmanager
def compiled_blocks(blocks: Sequence[nn.Module], compiled: Sequence[Callable] | None) -> Iterator[None]:
    """Inside the context, each of `blocks` runs its entry of `compiled` (what `nn.Module.compile` installs); the
    blocks are as before afterwards, so training and the ordinary inference path never see the compiled code."""
    if compiled is None:
        yield
        return
    saved = [block._compiled_call_impl for block in blocks]
    try:
        for block, function in zip(blocks, compiled):
            block._compiled_call_impl = function
        yield
    finally:
        for block, function in zip(blocks, saved):
            block._compiled_call_impl = function


def fresh_output(output: Any, patch_offsets: list[Tensor] | None) -> Any:
    """A new output of `output`'s class with copies of its tensors (the graph overwrites its own at the next replay):
    class and mask logits in float32, the others in their dtype; `patch_offsets` passed through."""
    fields = {}
    for name, value in output.items():

        def copy_of(tensor: Tensor) -> Tensor:
            return tensor.to(torch.float32, copy=True) if "logits" in name else tensor.clone()

        fields[name] = tuple(copy_of(item) for item in value) if isinstance(value, tuple) else copy_of(value)
    return type(output)(**fields, patch_offsets=patch_offsets)


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_set_up(backend: Any, kernel: str | None) -> str:
    """How a static path runs, in words: its blocks and its attention kernel."""
    blocks = "uncompiled blocks" if backend is None else f"blocks compiled by {getattr(backend, '__name__', backend)}"
    attention = kernel.lower().replace("_attention", "") if kernel else "the default"
    return f"{blocks} with {attention} attention"


def capture_cuda_graph(run: Callable[[Tensor], Any], static_input: Tensor) -> tuple[torch.cuda.CUDAGraph, Any]:
    """A CUDA graph of `run(static_input)` and the output it writes at every replay. `run` is called
    `WARMUP_CALLS` times first, on a side stream, so that nothing is compiled, tuned or loaded during the capture."""
    device = static_input.device
    with torch.cuda.device(device):
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                run(static_input)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads' CUDA calls do not matter
            static_output = run(static_input)
    return graph, static_output


# ----------------------------------------------------------------------------------------------------------------------
# The static path
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """What the first call set up: the device, the probabilities and snapshot it runs on, and on CUDA the graph."""

    device: torch.device
    attn_mask_probs: tuple[float, ...]
    run: Callable[[Tensor], Any]
    graph: torch.cuda.CUDAGraph | None = None
    static_input: Tensor | None = None
    static_output: Any = None


class StaticInference:
    """The static inference path of one model for inputs of shape `(batch, num_channels, height, width)`.

    Args:
        model: an `EoMTForUniversalSegmentation` (driven through its `_forward` and `eomt.layers`).
        static_shape: `(batch, height, width)` of the inputs it runs.
        dtype: autocast dtype (torch.bfloat16 / torch.float16), or None for float32.
        compile: compile the transformer blocks: True (inductor) or a `torch.compile` backend; False for none.
    """

    def __init__(
        self,
        model: nn.Module,
        static_shape: Sequence[int],
        dtype: torch.dtype | None,
        compile: bool | str | Callable = False,
    ) -> None:
        batch, height, width = check_static_shape(static_shape, model.config.patch_size)
        self.model = model
        self.shape = (batch, model.config.num_channels, height, width)
        self.dtype = dtype
        self.backend = compile_backend(compile)
        self.attention_backend: str | None = None  # the SDPA kernel chosen at set-up (CUDA only)
        self.blocks_compiled = self.backend is not None  # False after a fall-back to uncompiled blocks (CUDA)
        self._prepared: _Prepared | None = None

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether the path is set up and replays a CUDA graph."""
        return self._prepared is not None and self._prepared.graph is not None

    def __deepcopy__(self, memo: dict) -> StaticInference:
        """A copy for the copied model, set up again at its first call (graphs and snapshots are not copied)."""
        clone = copy.copy(self)
        clone.model = copy.deepcopy(self.model, memo)
        clone.attention_backend, clone.blocks_compiled, clone._prepared = None, self.backend is not None, None
        return clone

    def __call__(self, pixel_values: Tensor, patch_offsets: list[Tensor] | None = None) -> Any:
        """The model's output for `pixel_values`, or None where this path does not apply: another shape or device,
        `attn_mask_probs` changed since the set-up, or gradients asked for the input."""
        if tuple(pixel_values.shape) != self.shape or (torch.is_grad_enabled() and pixel_values.requires_grad):
            return None
        prepared = self._prepared
        if prepared is None:
            if pixel_values.device != self.model.device:
                return None
            prepared = self._prepared = self._prepare(pixel_values)
        if pixel_values.device != prepared.device or self.model._attn_mask_probs_values != prepared.attn_mask_probs:
            return None
        if prepared.graph is None:
            with torch.inference_mode(False), torch.no_grad():
                return fresh_output(prepared.run(pixel_values), patch_offsets)
        prepared.static_input.copy_(pixel_values)
        prepared.graph.replay()
        return fresh_output(prepared.static_output, patch_offsets)

    def _prepare(self, pixel_values: Tensor) -> _Prepared:
        """Set up on `pixel_values`' device (in neither inference mode nor grad mode: the snapshot and the graph's
        buffers are ordinary tensors that later calls may use in any mode).

        On CUDA, should the graph fail to compile or to be captured, it is captured again without the compiled blocks,
        then also without the chosen attention kernel, with a warning that names the errors."""
        device = pixel_values.device
        with torch.inference_mode(False), torch.no_grad():
            attn_mask_probs = self.model._read_attn_mask_probs()
            weights = {f"model.{name}": tensor for name, tensor in snapshot_weights(self.model, self.dtype).items()}
            if device.type != "cuda":
                run = self._forward_on(weights, attn_mask_probs, device, self.backend, None)
                return _Prepared(device, attn_mask_probs, run)
            fastest = None
            if not any(attn_mask_probs):  # masked query rows need a kernel that takes a mask: PyTorch's choice
                fastest = fastest_attention_backend(self._attention_shape(), self.dtype or torch.float32, device)
            static_input = pixel_values.clone()
            errors = []
            for backend, kernel in dict.fromkeys([(self.backend, fastest), (None, fastest), (None, None)]):
                run = self._forward_on(weights, attn_mask_probs, device, backend, kernel)
                try:
                    graph, static_output = capture_cuda_graph(run, static_input)
                except Exception as error:  # noqa: BLE001 (compiler and capture errors: the next set-up may work)
                    errors.append(f"{describe_set_up(backend, kernel)}: {first_line(error)}")
                    continue
                if errors:
                    warnings.warn(f"static inference: captured {describe_set_up(backend, kernel)} instead, after "
                                  f"{'; '.join(errors)}", stacklevel=3)  # fmt: skip
                self.blocks_compiled, self.attention_backend = backend is not None, kernel
                return _Prepared(device, attn_mask_probs, run, graph, static_input, static_output)
        raise RuntimeError(f"static inference: no CUDA graph could be captured: {'; '.join(errors)}")

    def _forward_on(
        self,
        weights: dict[str, Tensor],
        attn_mask_probs: tuple[float, ...],
        device: torch.device,
        backend: Any,
        kernel: str | None,
    ) -> Callable[[Tensor], Any]:
        """The forward pass on `weights` (the snapshot) with `attn_mask_probs`, under autocast, with the blocks
        compiled by `backend` (None: not compiled) and the SDPA kernel `kernel` (None: PyTorch's choice)."""
        forward = _InferenceForward(self.model, attn_mask_probs)
        blocks = list(self.model.eomt.layers)
        compiled = None
        if backend is not None:
            compiled = [torch.compile(block._call_impl, backend=backend, dynamic=False) for block in blocks]
        autocast = dict(device_type=device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

        def run(pixel_values: Tensor) -> Any:
            with compiled_blocks(blocks, compiled), attention_kernel(kernel):
                with torch.autocast(**autocast, cache_enabled=False):  # no cached casts in a CUDA graph
                    return torch.func.functional_call(forward, weights, (pixel_values,), strict=True)

        return run

    def _attention_shape(self) -> tuple[int, int, int, int]:
        """`(B, heads, T, D)` of the attention in the blocks that carry the queries."""
        config, (batch, _, height, width) = self.model.config, self.shape
        patches = (height // config.patch_size) * (width // config.patch_size)
        tokens = config.num_queries + self.model.eomt.num_prefix_tokens + patches
        heads = config.num_attention_heads
        return batch, heads, tokens, config.hidden_size // heads
