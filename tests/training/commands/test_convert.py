"""`eomt convert`: the authors' original checkpoints (synthetic ones, `tests/modeling/checkpoints/references.py`)
to this package's format and on to transformers' and back, and a bad source as one line."""

import json
import re

import pytest
import torch
from transformers import AutoModelForUniversalSegmentation, EomtForUniversalSegmentation

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.checkpoints import save_as_transformers_eomt
from tests.modeling.checkpoints.references import original_state_dict, save_checkpoint, source_model
from training.commands import main


def test_cli_converts_original_then_exports_to_transformers(tmp_path, capsys):
    source = source_model("dinov2-registers", num_labels=19)
    path = save_checkpoint(original_state_dict(source), tmp_path, "bin")
    assert main(["convert", str(path), str(tmp_path / "ours"), "--dataset", "cityscapes"]) == 0
    assert "hidden 64, 3 layers, 1 heads, 4 registers" in capsys.readouterr().out
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "eomt_vit"
    model = AutoModelForUniversalSegmentation.from_pretrained(tmp_path / "ours").eval()
    assert isinstance(model, EoMTForUniversalSegmentation) and model.config.id2label[10] == "sky"

    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "transformers"), "--to", "transformers"]) == 0
    reference = EomtForUniversalSegmentation.from_pretrained(tmp_path / "transformers").eval()
    assert main(["convert", str(tmp_path / "transformers"), str(tmp_path / "back")]) == 0  # auto-detected
    back = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "back").eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    reference.attn_mask_probs.zero_()  # transformers' model
    for other in (model, back, source):
        other.set_attn_mask_probs(0.0)
    with torch.no_grad():
        expected = source(pixel_values).masks_queries_logits
        for other in (model, reference, back):
            torch.testing.assert_close(other(pixel_values).masks_queries_logits, expected, atol=1e-5, rtol=1e-5)


def test_cli_original_directory_and_bad_source(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    save_checkpoint(original_state_dict(source_model("dinov3")), tmp_path / "repo", "bin")
    assert main(["convert", str(tmp_path / "repo"), str(tmp_path / "out"), "--image-size", "512"]) == 0
    assert EoMTForUniversalSegmentation.from_pretrained(tmp_path / "out").config.image_size == 512
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "nowhere")]) == 2  # one line, no traceback
    assert re.match(r"eomt convert: error: .*empty: neither a config\.json nor a pytorch_model\.bin",
                    capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"empty: neither a config\.json nor a pytorch_model\.bin"):
        main(["--debug", "convert", str(tmp_path / "empty"), str(tmp_path / "nowhere")])


def test_original_weights_next_to_a_transformers_config(tmp_path):
    """A Hub-style directory with transformers' config.json but the authors' original `pytorch_model.bin`."""
    source = source_model("dinov2-registers")
    save_as_transformers_eomt(source, tmp_path / "repo")
    (tmp_path / "repo" / "model.safetensors").unlink()
    save_checkpoint(original_state_dict(source), tmp_path / "repo", "bin")
    with pytest.raises(ValueError, match=r"the authors' original ones \(`network\.` keys\).*eomt convert"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path / "repo")
    assert main(["convert", str(tmp_path / "repo"), str(tmp_path / "out"), "--from", "original"]) == 0
    converted = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "out")
    assert all(torch.equal(value, converted.state_dict()[key]) for key, value in source.state_dict().items())


def test_transformers_format_carries_the_processor_config_for_the_pipeline(tmp_path):
    """`--to transformers` writes transformers' `EomtImageProcessor` config: its own pipeline runs on the folder."""
    import numpy as np
    from PIL import Image
    from transformers import EomtImageProcessorPil, pipeline

    from image_processing import EoMTImageProcessor

    source = source_model("dinov2-registers", num_labels=19)
    source.save_pretrained(tmp_path / "ours")
    EoMTImageProcessor(size=64, do_pad=True).save_pretrained(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "transformers"), "--to", "transformers"]) == 0
    config = json.loads((tmp_path / "transformers" / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "EomtImageProcessor" and config["size"]["longest_edge"] == 64
    segmenter = pipeline("image-segmentation", model=str(tmp_path / "transformers"))
    assert isinstance(segmenter.model, EomtForUniversalSegmentation)
    assert isinstance(segmenter.image_processor, EomtImageProcessorPil) and segmenter.image_processor.do_pad
    image = Image.fromarray((np.random.RandomState(0).rand(48, 80, 3) * 255).astype(np.uint8))  # not square
    segments = segmenter(image, subtask="semantic")
    assert segments and all(segment["mask"].size == (80, 48) for segment in segments)
    # and back: the geometry and normalisation read from the converted folder are the same
    again, ours = (EoMTImageProcessor.from_pretrained(tmp_path / name).to_dict() for name in ("transformers", "ours"))
    assert {k: v for k, v in again.items() if k != "ignore_index"} == {k: v for k, v in ours.items() if k != "ignore_index"}
