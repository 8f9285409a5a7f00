"""The mask-free inference graph exported with torch.export and to ONNX (`modeling_eomt.export`) computes the eager
model's logits for every batch and input size it allows, and its outputs post-process to the same segments."""

import pytest
import torch

from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.export import (
    OUTPUT_NAMES,
    check_exportable,
    export_model,
    export_onnx,
    export_program,
    logits_output,
    onnxruntime_session,
    run_onnx,
)
from tests.modeling.helpers import needs_int8, perturb_, tiny_config, use_cpu_kernels

TOLERANCE = 1e-3  # of the logits, absolute: the exported graphs compute the same float32 operations
# (batch, height, width): the example size (64 = config.image_size), smaller, non-square, a batch of 3
SIZES = [(1, 64, 64), (3, 32, 96), (2, 80, 48)]


def mask_free_model(variant: str) -> EoMTForUniversalSegmentation:
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant))).eval()
    model.set_attn_mask_probs(0.0)
    return model


def assert_same_logits(actual, expected) -> None:
    for name in OUTPUT_NAMES:
        difference = (getattr(actual, name) - getattr(expected, name)).abs().max().item()
        print(f"{name}: max |exported - eager| = {difference:.1e}")
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=TOLERANCE, rtol=0)


def eager(model, pixel_values):
    with torch.no_grad():
        return model(pixel_values)


def test_export_refuses_masked_attention_and_fast_inference():
    model = EoMTForUniversalSegmentation(tiny_config()).eval()
    model.set_attn_mask_probs([0.0, 0.5])
    message = r"masked attention is on \(attn_mask_probs = \[0.0, 0.5\]\): only the mask-free model exports"
    with pytest.raises(ValueError, match=message):
        export_program(model)
    model.set_attn_mask_probs(0.0)
    model.enable_fast_inference(torch.float16)
    options = r"enable_fast_inference options on \(dtype torch.float16, int8 linear layers: False, compiled: False\)"
    with pytest.raises(ValueError, match=options):
        check_exportable(model)
    with pytest.raises(ValueError, match="format must be one of torch, onnx, got 'tflite'"):
        export_model(model.enable_fast_inference(None), "model.tflite", format="tflite")
    with pytest.raises(ValueError, match="image_size must be positive multiples of patch_size=16, got 40x64"):
        export_program(model, image_size=(40, 64))


@needs_int8
def test_export_refuses_int8_layers_without_autocast(monkeypatch):
    # On a CPU without fast bfloat16, int8 inference runs its other layers in float32: no autocast dtype to see
    use_cpu_kernels(monkeypatch, fast_bfloat16=False)
    model = EoMTForUniversalSegmentation(tiny_config()).enable_fast_inference("int8")
    model.set_attn_mask_probs(0.0)
    assert model.inference_dtype is None
    with pytest.raises(ValueError, match=r"\(dtype None, int8 linear layers: True, compiled: False\)"):
        check_exportable(model)
    check_exportable(model.enable_fast_inference(None))


@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
def test_exported_program_with_dynamic_batch_and_size_matches_eager(variant, tmp_path):
    model = mask_free_model(variant)
    path = export_model(model, tmp_path / "model.pt2", format="torch", dynamic_batch=True)
    exported = torch.export.load(str(path)).module()
    for batch, height, width in SIZES:
        pixel_values = torch.randn(batch, 3, height, width)
        assert_same_logits(logits_output(*exported(pixel_values)), eager(model, pixel_values))


def test_fixed_size_program_accepts_only_its_size():
    model = mask_free_model("dinov2-registers-swiglu")
    exported = export_program(model, image_size=(48, 80), batch_size=2).module()
    pixel_values = torch.randn(2, 3, 48, 80)  # not the configured 64x64: the position embeddings are resampled
    assert_same_logits(logits_output(*exported(pixel_values)), eager(model, pixel_values))
    for shape in [(2, 3, 64, 64), (1, 3, 48, 80)]:
        with pytest.raises(Exception, match="shape|size|Guard"):
            exported(torch.randn(*shape))


@pytest.fixture(scope="module", params=["dinov2-registers-swiglu", "dinov3"])
def onnx_export(request, tmp_path_factory):
    """A tiny mask-free model and an onnxruntime session of its ONNX export (dynamic batch and size)."""
    model = mask_free_model(request.param)
    path = export_onnx(export_program(model, dynamic_batch=True), tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, onnxruntime_session(path, threads=1)


def test_onnxruntime_matches_eager_for_every_size(onnx_export):
    model, session = onnx_export
    assert [tensor.name for tensor in session.get_inputs()] == ["pixel_values"]
    assert [tensor.name for tensor in session.get_outputs()] == list(OUTPUT_NAMES)
    for batch, height, width in SIZES:
        pixel_values = torch.randn(batch, 3, height, width)
        assert_same_logits(run_onnx(session, pixel_values), eager(model, pixel_values))


def test_onnxruntime_outputs_post_process_to_the_same_segments(onnx_export):
    model, session = onnx_export
    processor = EoMTImageProcessor(size=64, num_labels=model.config.num_labels)
    pixel_values = torch.randn(2, 3, 64, 64)
    target_sizes = [(64, 64), (50, 60)]
    options = dict(threshold=0.0, target_sizes=target_sizes)  # random weights: keep every segment
    expected = processor.post_process_panoptic_segmentation(eager(model, pixel_values), **options)
    actual = processor.post_process_panoptic_segmentation(run_onnx(session, pixel_values), **options)
    assert sum(len(result["segments_info"]) for result in expected) > 0
    for got, want in zip(actual, expected):
        assert torch.equal(got["segmentation"], want["segmentation"])
        segments, wanted = got["segments_info"], want["segments_info"]
        assert [(s["id"], s["label_id"]) for s in segments] == [(s["id"], s["label_id"]) for s in wanted]
        assert [s["score"] for s in segments] == pytest.approx([s["score"] for s in wanted], abs=1e-4)
