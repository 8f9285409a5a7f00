"""Reading weight files and model directories: layouts, safe loading, clear errors."""

import argparse

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.backbones import init_from_backbone, load_backbone
from modeling_eomt.checkpoints.io import hub_download_kwargs
from modeling_eomt.checkpoints.original import convert_original_checkpoint
from tests.modeling.checkpoints.references import dinov2, original_state_dict, save, source_model


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no config\.json"):
        load_backbone(tmp_path / "empty")


def test_unreachable_hub_id_is_named():
    with pytest.raises(OSError, match="no-such-org/no-such-model"):
        load_backbone("no-such-org/no-such-model", local_files_only=True)


@pytest.mark.parametrize("layout", ["pytorch_model.bin", "sharded"])
def test_weight_file_layouts(tmp_path, layout):
    reference = dinov2(False, 28)
    path = tmp_path / "backbone"
    if layout == "sharded":
        reference.save_pretrained(path, max_shard_size="20KB")
        assert (path / "model.safetensors.index.json").is_file()
    else:
        reference.config.save_pretrained(path)
        torch.save(reference.state_dict(), path / "pytorch_model.bin")
    assert load_backbone(path)[1]["model_type"] == "dinov2"
    kwargs = dict(patch_size=14, image_size=28, num_blocks=1)
    loaded = init_from_backbone(EoMTModel, path, **kwargs).state_dict()
    expected = init_from_backbone(EoMTModel, save(reference, tmp_path / "single"), **kwargs).state_dict()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected if key != "query.weight")



def test_non_tensor_pickle_is_refused(tmp_path):
    state = original_state_dict(source_model("dinov2-registers"))
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tmp_path / "unsafe.ckpt")
    with pytest.raises(ValueError, match=r"unsafe\.ckpt: could not be read as a weights-only PyTorch checkpoint"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, tmp_path / "unsafe.ckpt")



def test_hub_download_arguments_are_one_set():
    kwargs = {"revision": "v1", "force_download": True, "local_files_only": False, "num_labels": 3}
    assert hub_download_kwargs(kwargs) == {"revision": "v1", "force_download": True, "local_files_only": False}
    assert kwargs["num_labels"] == 3 and len(kwargs) == 4  # only read
    hub_download_kwargs(kwargs, pop=True)
    assert kwargs == {"num_labels": 3}
