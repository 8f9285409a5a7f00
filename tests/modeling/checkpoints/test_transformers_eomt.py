"""Parity with transformers' own EoMT classes (the reference), in both directions of conversion."""

import json

import pytest
import torch
from transformers import (
    EomtConfig,
    EomtDinov3Config,
    EomtDinov3ForUniversalSegmentation,
    EomtForUniversalSegmentation,
)

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.transformers_eomt import save_as_transformers_eomt
from tests.modeling.helpers import perturb_, tiny_config

COMMON = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, image_size=64, patch_size=16, num_queries=5, num_labels=4)

REFERENCES = {
    "dinov2-registers-swiglu": lambda: EomtForUniversalSegmentation(EomtConfig(**COMMON, num_register_tokens=4, use_swiglu_ffn=True)),
    "dinov2-mlp": lambda: EomtForUniversalSegmentation(EomtConfig(**COMMON, num_register_tokens=0)),
    "dinov3": lambda: EomtDinov3ForUniversalSegmentation(EomtDinov3Config(**COMMON, num_register_tokens=4, intermediate_size=64)),
    "dinov3-gated": lambda: EomtDinov3ForUniversalSegmentation(
        EomtDinov3Config(**COMMON, num_register_tokens=2, intermediate_size=48, use_gated_mlp=True)
    ),
}


def max_differences(ours, reference, pixel_values, prob):
    ours.set_attn_mask_probs(prob)
    reference.attn_mask_probs.fill_(prob)
    with torch.no_grad():
        a, b = ours(pixel_values), reference(pixel_values)
    return (
        (a.class_queries_logits - b.class_queries_logits).abs().max().item(),
        (a.masks_queries_logits - b.masks_queries_logits).abs().max().item(),
    )


@pytest.mark.parametrize("variant", sorted(REFERENCES))
def test_loads_transformers_checkpoint_with_identical_outputs(variant, tmp_path):
    reference = perturb_(REFERENCES[variant]()).eval()
    reference.save_pretrained(tmp_path)
    ours = EoMTForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert ours.config.model_type == "eomt_vit"
    assert ours.config.position_embedding_type == ("rope" if "dinov3" in variant else "absolute")
    pixel_values = torch.randn(2, 3, 64, 64)
    for prob in (0.0, 1.0):  # mask-free, and masked attention in every query block
        class_diff, mask_diff = max_differences(ours, reference, pixel_values, prob)
        print(f"{variant} p={prob}: class {class_diff:.2e}, mask {mask_diff:.2e}")
        assert class_diff < 1e-4 and mask_diff < 1e-4


@pytest.mark.parametrize("variant", ["dinov2", "dinov2-registers-swiglu", "dinov3", "dinov3-gated"])
def test_exports_to_transformers_format(variant, tmp_path):
    ours = perturb_(EoMTForUniversalSegmentation(tiny_config(variant))).eval()
    save_as_transformers_eomt(ours, tmp_path)
    model_type = json.loads((tmp_path / "config.json").read_text())["model_type"]
    reference_class = EomtDinov3ForUniversalSegmentation if model_type == "eomt_dinov3" else EomtForUniversalSegmentation
    reference = reference_class.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    for prob in (0.0, 1.0):
        class_diff, mask_diff = max_differences(ours, reference, pixel_values, prob)
        assert class_diff < 1e-4 and mask_diff < 1e-4
    # ... and back again, exactly.
    again = EoMTForUniversalSegmentation.from_pretrained(tmp_path)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_encoder_loads_from_transformers_checkpoint(tmp_path):
    reference = perturb_(REFERENCES["dinov3"]()).eval()
    reference.save_pretrained(tmp_path)
    encoder = EoMTModel.from_pretrained(tmp_path)
    segmentation = EoMTForUniversalSegmentation.from_pretrained(tmp_path)
    segmentation.set_attn_mask_probs(0.0)
    pixel_values = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(encoder(pixel_values).last_hidden_state, segmentation(pixel_values).last_hidden_state)


def test_transformers_checkpoint_with_unknown_key_is_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    reference = REFERENCES["dinov2-mlp"]()
    reference.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["layers.0.extra.weight"] = torch.zeros(3)
    del state["layers.2.norm2.bias"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unrecognised keys .*layers.0.extra.weight"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path)
    del state["layers.0.extra.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \['eomt.layers.2.norm2.bias'\]"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path)


def test_transformers_checkpoint_for_new_classes(tmp_path):
    reference = perturb_(REFERENCES["dinov2-registers-swiglu"]())
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="shape mismatches class_predictor"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path, num_labels=9)
    model = EoMTForUniversalSegmentation.from_pretrained(tmp_path, num_labels=9, reinitialize_heads=True)
    assert model.class_predictor.out_features == 10
    assert torch.equal(model.eomt.query.weight, reference.query.weight)
