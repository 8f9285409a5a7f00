"""Strict loading of canonical state dicts: what counts as a problem, for the segmentation model and a bare encoder."""

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.loading import check_loading_info, load_state_dict_with_info
from tests.modeling.helpers import perturb_, tiny_config


def test_a_bare_encoder_takes_the_encoder_tensors_and_ignores_the_heads():
    source = perturb_(EoMTForUniversalSegmentation(tiny_config()))
    encoder = EoMTModel(tiny_config())
    info = load_state_dict_with_info(encoder, source.state_dict())
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert info["unexpected_keys"] and all(not key.startswith("eomt.") for key in info["unexpected_keys"])
    check_loading_info(encoder, info, "source", reinitialize_heads=False)  # the heads are not the encoder's
    assert all(torch.equal(value, source.state_dict()["eomt." + key]) for key, value in encoder.state_dict().items())
    model = EoMTForUniversalSegmentation(tiny_config())
    with pytest.raises(ValueError, match=r"source: checkpoint does not match EoMTForUniversalSegmentation: unexpected"):
        check_loading_info(model, {"unexpected_keys": {"class_predictor.extra"}}, "source", reinitialize_heads=False)


def test_new_heads_are_allowed_only_when_asked_and_only_heads():
    model = EoMTForUniversalSegmentation(tiny_config())
    state = perturb_(EoMTForUniversalSegmentation(tiny_config(num_labels=7))).state_dict()
    del state["mask_head.fc3.bias"]
    info = load_state_dict_with_info(model, state)
    mismatched = {"class_predictor.weight", "class_predictor.bias"}  # left out of loading, so missing too
    assert info["missing_keys"] == {"mask_head.fc3.bias"} | mismatched
    assert {key for key, _, _ in info["mismatched_keys"]} == mismatched
    message = r"missing keys \[.*'mask_head\.fc3\.bias'\]; shape mismatches class_predictor\.bias: checkpoint \(8,\) "
    with pytest.raises(ValueError, match=message + r"vs model \(5,\).*\(pass reinitialize_heads=True"):
        check_loading_info(model, info, "ckpt", reinitialize_heads=False)
    check_loading_info(model, info, "ckpt", reinitialize_heads=True)
    info["missing_keys"].add("eomt.layernorm.weight")
    with pytest.raises(ValueError, match=r"missing keys \['eomt\.layernorm\.weight'\]$"):  # no hint: not a head
        check_loading_info(model, info, "ckpt", reinitialize_heads=True)
