"""The mask-free inference graph of `EoMTForUniversalSegmentation`, exported with `torch.export` (`.pt2`) and to ONNX.

The exported function maps float32 `pixel_values` `(B, C, H, W)` to `(class_queries_logits (B, Q, K + 1),
masks_queries_logits (B, Q, H / 4, W / 4))` (for patch 16 and 2 upscale blocks), the outputs of the eager model in eval
mode. The batch is fixed or dynamic; height and width are fixed or dynamic multiples of the patch size, at least two
patches each (the position embeddings are resampled inside the graph for every size, DINOv3's rotary embedding is
computed for it). Only the mask-free model exports: masked attention draws random masks from intermediate predictions.
`logits_output` turns the exported outputs back into the model's output for the image processor's post-processing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .modeling_eomt import EoMTForUniversalSegmentation, EoMTForUniversalSegmentationOutput
from .quantization import Int8Linear

if TYPE_CHECKING:
    import onnxruntime

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits")
FORMATS = {"torch": ".pt2", "onnx": ".onnx"}  # format: the usual suffix of its files


class SegmentationLogits(nn.Module):
    """`model`'s mask-free inference as a function of `pixel_values` alone, returning the class and mask logits: the
    module that is exported."""

    def __init__(self, model: EoMTForUniversalSegmentation) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.model(pixel_values, return_dict=True)
        return outputs.class_queries_logits, outputs.masks_queries_logits


def check_exportable(model: EoMTForUniversalSegmentation) -> None:
    """Raise a `ValueError` naming the reason when `model` does not export: masked attention still on, or
    `enable_fast_inference` options (which the exported float32 graph would not contain)."""
    probs = model._read_attn_mask_probs()
    if any(prob > 0 for prob in probs):
        raise ValueError(
            f"the model's masked attention is on (attn_mask_probs = {list(probs)}): only the mask-free model exports. "
            "Call model.set_attn_mask_probs(0) first (a model trained with mask annealing ends at 0)"
        )
    int8 = any(isinstance(module, Int8Linear) for module in model.modules())
    if model.inference_dtype is not None or model.compiled_inference is not None or int8:
        raise ValueError(
            f"export traces the float32 model; this one has enable_fast_inference options on (dtype "
            f"{model.inference_dtype}, int8 linear layers: {int8}, compiled: {model.compiled_inference is not None}): "
            "call model.enable_fast_inference(None) first"
        )


def check_image_size(image_size: Sequence[int], patch_size: int) -> tuple[int, int]:
    """`(height, width)`, checked: two positive multiples of `patch_size`."""
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {tuple(image_size)}")
    height, width = (int(side) for side in image_size)
    if min(height, width) <= 0 or height % patch_size or width % patch_size:
        raise ValueError(f"image_size must be positive multiples of patch_size={patch_size}, got {height}x{width}")
    return height, width


def export_program(
    model: EoMTForUniversalSegmentation,
    image_size: Sequence[int] | None = None,
    dynamic_batch: bool = False,
    batch_size: int = 1,
) -> torch.export.ExportedProgram:
    """`torch.export` of `SegmentationLogits(model)` (in eval mode, on the model's device).

    Args:
        image_size: `(height, width)` for a graph of that size only, multiples of `patch_size`; None: any height and
            width that are multiples of `patch_size`, at least two patches each.
        dynamic_batch: any batch size; else `batch_size` images.
    """
    check_exportable(model)
    config = model.config
    patch = config.patch_size
    height, width = config.grid_size[0] * patch, config.grid_size[1] * patch
    if image_size is not None:
        height, width = check_image_size(image_size, patch)
    dims: dict[int, object] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1)
        batch_size = max(batch_size, 2)  # an example of 1 would be specialised to 1
    if image_size is None:
        dims[2] = patch * torch.export.Dim("grid_height", min=2)
        dims[3] = patch * torch.export.Dim("grid_width", min=2)
    example = torch.randn(batch_size, config.num_channels, height, width, device=model.device)
    module = SegmentationLogits(model.eval())
    return torch.export.export(module, (example,), dynamic_shapes={INPUT_NAME: dims or None})


def export_onnx(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Write `program` (from `export_program`) as an ONNX model to `path`, with input `pixel_values` and outputs
    `OUTPUT_NAMES` (dynamic dimensions stay dynamic); weights beyond ONNX's 2 GB limit go to a file beside it."""
    # The ONNX exporter warns at every call about torchvision's operators, which this model does not use.
    registration_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_logger.level
    registration_logger.setLevel(logging.ERROR)
    try:
        example = tuple(program.example_inputs[0])
        onnx_program = torch.onnx.export(
            program, example, dynamo=True, verbose=False, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES)
        )
    finally:
        registration_logger.setLevel(level)
    onnx_program.save(str(path))
    return Path(path)


def export_model(
    model: EoMTForUniversalSegmentation,
    path: str | os.PathLike,
    format: str = "onnx",
    image_size: Sequence[int] | None = None,
    dynamic_batch: bool = False,
    batch_size: int = 1,
) -> Path:
    """Export `model` (`export_program`) to `path` as `format`: "torch" (`torch.export.save`, load with
    `torch.export.load(path).module()`) or "onnx" (`export_onnx`). Returns the path written."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    program = export_program(model, image_size, dynamic_batch, batch_size)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        return export_onnx(program, path)
    torch.export.save(program, str(path))
    return Path(path)


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for the ONNX model at `path`, with `threads` intra-op threads (default: onnxruntime's)
    that sleep when idle instead of spinning, so that process CPU time counts only work."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: onnxruntime.InferenceSession, pixel_values: Tensor) -> EoMTForUniversalSegmentationOutput:
    """The model output (`logits_output`) of an onnxruntime `session` on `pixel_values` (CPU tensors)."""
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixel_values.detach().cpu().float().numpy()})
    return logits_output(*(torch.from_numpy(output) for output in outputs))


def logits_output(class_queries_logits: Tensor, masks_queries_logits: Tensor) -> EoMTForUniversalSegmentationOutput:
    """The exported graph's outputs as the model's output, which the image processor's `post_process_*` methods take."""
    return EoMTForUniversalSegmentationOutput(
        class_queries_logits=class_queries_logits, masks_queries_logits=masks_queries_logits
    )
