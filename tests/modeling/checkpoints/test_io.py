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


# ---- atomic writes ----


def test_an_interrupted_save_leaves_the_previous_model_intact(tmp_path):
    from modeling_eomt.checkpoints.io import staged_directory

    folder = tmp_path / "model"
    source_model("dinov2-registers").save_pretrained(folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_directory(folder) as staging:
            (staging / "model.safetensors").write_bytes(b"half a file")
            raise RuntimeError("disk full")
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_a_staged_save_replaces_the_model_and_its_stale_shards(tmp_path):
    from modeling_eomt.checkpoints.io import staged_directory

    folder = tmp_path / "model"
    model = source_model("dinov2-registers")
    model.save_pretrained(folder, max_shard_size="20KB")  # sharded: an index and several files
    (folder / "notes.txt").write_text("mine")
    assert (folder / "model.safetensors.index.json").is_file()
    with staged_directory(folder) as staging:
        model.save_pretrained(staging)  # one file
    model.save_pretrained(tmp_path / "fresh")  # what one save writes: weights, config, remote code, model card
    expected = sorted([path.name for path in (tmp_path / "fresh").iterdir()] + ["notes.txt"])
    assert sorted(path.name for path in folder.iterdir()) == expected
    assert not list(folder.glob("*.index.json")) and not list(folder.glob("model-0*.safetensors"))  # no stale shard
    reloaded = EoMTForUniversalSegmentation.from_pretrained(folder)
    assert all(torch.equal(reloaded.state_dict()[key], value) for key, value in model.state_dict().items())


def test_atomic_path_replaces_a_file_in_one_step(tmp_path):
    from modeling_eomt.checkpoints.io import atomic_path, write_text_atomically

    path = tmp_path / "metrics.json"
    write_text_atomically(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as partial:
            partial.write_text("ne")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_text_atomically(path, "new")
    assert path.read_text() == "new"
