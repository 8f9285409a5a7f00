"""The package's entry points: format detection, `load_checkpoint` / `convert_checkpoint` (`eomt convert` itself is
tested in tests/training/commands/test_convert.py)."""

import pytest

from modeling_eomt.checkpoints import save_as_transformers_eomt
from tests.modeling.checkpoints.references import original_state_dict, save_checkpoint, source_model


def test_checkpoint_format_of_files_directories_and_hub_ids(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from modeling_eomt.checkpoints import detect_checkpoint_format

    source = source_model("dinov2-registers")
    assert detect_checkpoint_format(save_checkpoint(original_state_dict(source), tmp_path, "ckpt")) == "original"
    source.save_pretrained(tmp_path / "ours")
    save_as_transformers_eomt(source, tmp_path / "transformers")
    assert detect_checkpoint_format(tmp_path / "ours") == "ours"
    assert detect_checkpoint_format(tmp_path / "transformers") == "transformers"
    assert detect_checkpoint_format("tue-mps/coco_panoptic_eomt_large_640") == "hub"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(tmp_path / "dino")
    with pytest.raises(ValueError, match=r"model_type 'dinov2' is not an EoMT checkpoint .*eomt train --backbone"):
        detect_checkpoint_format(tmp_path / "dino")
