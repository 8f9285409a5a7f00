"""`eomt export`: a saved mask-free model to ONNX and torch.export files that compute its logits; refusals as one line
with exit status 2."""

import re

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.export import logits_output, onnxruntime_session, run_onnx
from tests.modeling.helpers import perturb_, tiny_config
from tests.training.commands.helpers import run_cli


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny model saved mask-free (`attn_mask_probs` 0, as after mask annealing) and with masked attention on."""
    root = tmp_path_factory.mktemp("models")
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).eval()
    model.save_pretrained(root / "masked")
    model.set_attn_mask_probs(0.0)
    model.save_pretrained(root / "mask-free")
    return model, root


def printed_difference(output: str) -> float:
    """The largest difference `eomt export` reports between the exported outputs and the model's."""
    return float(re.search(r"differ from the model's by at most (\S+) on a random", output).group(1))


def test_cli_exports_onnx_with_dynamic_batch_and_size(saved_models, tmp_path, capsys):
    model, root = saved_models
    path = tmp_path / "model.onnx"
    assert run_cli("export", root / "mask-free", path, "--dynamic-batch") == 0
    output = capsys.readouterr().out
    assert f"wrote {path} (onnx; any batch, any height and width (multiples of 16))" in output
    assert printed_difference(output) < 1e-3
    session = onnxruntime_session(path, threads=1)
    pixel_values = torch.randn(3, 3, 48, 80)
    with torch.no_grad():
        expected = model(pixel_values)
    actual = run_onnx(session, pixel_values)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-3, rtol=0)
    torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits, atol=1e-3, rtol=0)


def test_cli_exports_a_fixed_size_torch_program(saved_models, tmp_path, capsys):
    model, root = saved_models
    path = tmp_path / "model.pt2"  # the format follows the suffix
    assert run_cli("export", root / "mask-free", path, "--image-size", 32, 48, "--batch-size", 2) == 0
    output = capsys.readouterr().out
    assert f"wrote {path} (torch; batch 2, 32x48)" in output and printed_difference(output) < 1e-3
    pixel_values = torch.randn(2, 3, 32, 48)
    actual = logits_output(*torch.export.load(str(path)).module()(pixel_values))
    with torch.no_grad():
        expected = model(pixel_values)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "model, options, message",
    [
        ("masked", [], "masked attention is on (attn_mask_probs = [1.0, 1.0]): only the mask-free model exports"),
        ("mask-free", ["--image-size", "40", "64"], "--image-size: image_size must be positive multiples of patch_size=16"),
        ("mask-free", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ("missing", [], "no such model file or directory"),
    ],
)
def test_cli_export_refusals_are_one_line(saved_models, tmp_path, capsys, model, options, message):
    _, root = saved_models
    source = root / model if model != "missing" else tmp_path / "missing"
    assert run_cli("export", source, tmp_path / "model.onnx", *options) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last_line = error.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert last_line.startswith("eomt export: error: ") and message in last_line
    assert not (tmp_path / "model.onnx").exists()


def test_cli_export_keeps_an_existing_file(saved_models, tmp_path, capsys):
    _, root = saved_models
    path = tmp_path / "model.onnx"
    path.write_text("keep")
    assert run_cli("export", root / "mask-free", path) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert path.read_text() == "keep"
