"""Initialising EoMT from DINOv2 / DINOv2-with-registers / DINOv3 checkpoints (tiny, saved with save_pretrained)."""

import json

import pytest
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel, Dinov2Config

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.backbones import (
    convert_backbone_state_dict,
    eomt_config_from_backbone,
    init_from_backbone,
    load_backbone,
)
from tests.modeling.checkpoints.references import TINY, dinov2, hidden_states, randomise, save


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("source_size, our_size, atol", [(28, 28, 1e-5), (56, 42, 1e-4)])
def test_dinov2_hidden_states_match(tmp_path, registers, source_size, our_size, atol):
    reference = dinov2(registers, source_size)
    model = init_from_backbone(EoMTModel, save(reference, tmp_path), patch_size=14, image_size=our_size, num_blocks=1, num_queries=3)
    num_prefix = 1 + (2 if registers else 0)
    assert model.config.num_register_tokens == num_prefix - 1
    assert model.config.ffn_type == ("swiglu" if registers else "mlp")
    pixel_values = torch.randn(2, 3, our_size, our_size)
    ours, theirs = hidden_states(model, pixel_values), hidden_states(reference, pixel_values)
    first_query_block = model.first_query_block
    assert first_query_block == 2
    for depth in range(first_query_block + 1):  # before the queries join, the token layouts coincide
        torch.testing.assert_close(ours[depth], theirs[depth], atol=atol, rtol=0)


@pytest.mark.parametrize("gated", [False, True])
def test_dinov3_hidden_states_match(tmp_path, gated):
    config = DINOv3ViTConfig(
        **TINY, intermediate_size=48, image_size=32, patch_size=16, num_register_tokens=2, use_gated_mlp=gated,
        key_bias=False, layer_norm_eps=1e-5, rope_theta=50.0,
    )  # fmt: skip
    reference = randomise(DINOv3ViTModel(config))
    model = init_from_backbone(EoMTModel, save(reference, tmp_path), image_size=48, num_blocks=1, num_queries=3)
    assert (model.config.position_embedding_type, model.config.rope_theta) == ("rope", 50.0)
    assert (model.config.key_bias, model.config.layer_norm_eps) == (False, 1e-5)
    in_memory = convert_backbone_state_dict(reference.state_dict(), reference.config, model.config)  # `model.layer.{i}`
    assert all(torch.equal(value, model.state_dict()[key.removeprefix("eomt.")]) for key, value in in_memory.items())
    pixel_values = torch.randn(2, 3, 48, 64)
    ours, theirs = hidden_states(model, pixel_values), hidden_states(reference, pixel_values)
    assert len(ours) == len(theirs) == 4  # embeddings + one per block, in both
    for depth in range(model.first_query_block + 1):
        torch.testing.assert_close(ours[depth], theirs[depth], atol=1e-4, rtol=0)


def test_saved_and_in_memory_dinov2_key_names_convert_alike():
    reference = dinov2(True, 28)
    state = reference.state_dict()
    legacy = {}
    for key, value in state.items():
        key = key.replace("attention.q_proj", "attention.attention.query").replace("attention.k_proj", "attention.attention.key")
        key = key.replace("attention.v_proj", "attention.attention.value").replace("attention.o_proj", "attention.output.dense")
        key = key.replace("mlp.down_proj", "mlp.weights_out")
        legacy[key] = value
    for param in ("weight", "bias"):
        for index in range(3):
            mlp = f"encoder.layer.{index}.mlp"
            legacy[f"{mlp}.weights_in.{param}"] = torch.cat((legacy.pop(f"{mlp}.gate_proj.{param}"), legacy.pop(f"{mlp}.up_proj.{param}")))
    config = eomt_config_from_backbone(reference.config, patch_size=14, image_size=28, num_blocks=1)
    new, old = convert_backbone_state_dict(state, reference.config, config), convert_backbone_state_dict(legacy, reference.config, config)
    assert new.keys() == old.keys()
    assert all(torch.equal(new[key], old[key]) for key in new)



def test_patch14_checkpoint_initialises_patch16_model(tmp_path):
    path = save(dinov2(False, 28), tmp_path)
    model = init_from_backbone(EoMTForUniversalSegmentation, path, num_labels=5, num_queries=4, num_blocks=1, image_size=64)
    assert model.config.patch_size == 16 and model.config.grid_size == (4, 4)
    assert model.eomt.embeddings.position_embeddings.shape == (1, 16, 32)
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 64))
    assert output.class_queries_logits.shape == (1, 4, 6)
    assert output.masks_queries_logits.shape == (1, 4, 16, 16)
    assert torch.isfinite(output.masks_queries_logits).all() and torch.isfinite(output.class_queries_logits).all()


def test_backbone_weights_loaded_and_heads_fresh(tmp_path):
    reference = dinov2(False, 28)
    model = init_from_backbone(EoMTForUniversalSegmentation, save(reference, tmp_path), num_labels=3, patch_size=14, image_size=28, num_blocks=1)
    assert torch.equal(model.eomt.layers[0].attention.proj.weight, reference.encoder.layer[0].attention.o_proj.weight)
    torch.testing.assert_close(model.eomt.layernorm.weight, reference.layernorm.weight)
    assert model.class_predictor.out_features == 4
    assert model.class_predictor.bias.abs().max() == 0  # freshly initialised
    assert model.eomt.query.weight.std() < 0.1


def test_unsupported_model_type(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported backbone model_type 'vit'.*dinov2"):
        eomt_config_from_backbone({"model_type": "vit", "hidden_size": 32})
    path = tmp_path / "vit"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match=r"vit.*unsupported backbone model_type 'vit'"):
        load_backbone(path)



def test_missing_and_unexpected_keys_are_named():
    reference = dinov2(False, 28)
    config = eomt_config_from_backbone(reference.config, patch_size=14, image_size=28, num_blocks=1)
    state = {key: value for key, value in reference.state_dict().items() if not key.startswith("encoder.layer.2.")}
    state["classifier.weight"] = torch.zeros(3, 32)
    with pytest.raises(ValueError, match=r"missing keys \['encoder\.layer\.2\..*unexpected keys \['classifier\.weight'\]"):
        convert_backbone_state_dict(state, reference.config, config)


def test_architecture_fields_cannot_be_overridden():
    with pytest.raises(ValueError, match="hidden_size"):
        eomt_config_from_backbone(Dinov2Config(**TINY), hidden_size=64)

