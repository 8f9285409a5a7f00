"""The authors' original checkpoints (`network.` keys, timm DINOv2 / renamed transformers DINOv3 backbones), written
by `references.original_state_dict` and checked against the source model and the authors' forward pass."""

import pytest
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.checkpoints.original import convert_original_checkpoint
from tests.modeling.checkpoints.references import (
    BACKBONE,
    TimmBackbone,
    TransformersDinov3Backbone,
    max_differences,
    original_state_dict,
    save_checkpoint,
    source_model,
)
from tests.modeling.helpers import perturb_


@pytest.mark.parametrize("variant, kind", [
    ("dinov2-registers", "bin"), ("dinov2-class-position", "ckpt"), ("dinov2-swiglu", "bin"), ("dinov3", "ckpt"),
    ("dinov3-gated", "safetensors"),
])  # fmt: skip
def test_converts_original_checkpoint(tmp_path, variant, kind):
    source = source_model(variant)
    state = original_state_dict(source)
    model = convert_original_checkpoint(EoMTForUniversalSegmentation, save_checkpoint(state, tmp_path, kind), tmp_path / "converted")

    config, expected = model.config, source.config
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_register_tokens", "patch_size",
                 "num_queries", "num_labels", "num_blocks", "num_upscale_blocks", "ffn_type", "ffn_hidden_size",
                 "position_embedding_type", "qkv_bias", "key_bias", "layer_norm_eps"):  # fmt: skip
        assert getattr(config, name) == getattr(expected, name), name
    assert config.image_size == (640 if variant.startswith("dinov3") else expected.image_size)  # RoPE stores no grid
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)  # class position: +-

    images = torch.rand(2, 3, expected.image_size, expected.image_size)  # timm's DINOv2 runs at its stored grid only
    backbone = TransformersDinov3Backbone(state, config) if variant.startswith("dinov3") else TimmBackbone(state, 1)
    differences = max_differences(model, state, backbone, images)
    print(variant, ", ".join(f"{name} {value:.1e}" for name, value in differences.items()))
    assert max(differences.values()) < 1e-4, differences

    reloaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "converted")
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    assert all(torch.equal(value, reloaded.state_dict()[key]) for key, value in model.state_dict().items())



def test_overrides_heads_image_size_and_labels(tmp_path):
    source = source_model("dinov2-registers", hidden_size=96, num_attention_heads=2, num_labels=19)
    path = save_checkpoint(original_state_dict(source), tmp_path, "bin")
    with pytest.raises(ValueError, match=r"hidden size 96 is not a multiple of 64: pass num_attention_heads"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, path)
    with pytest.raises(ValueError, match=r"fixed by the checkpoint's tensors: hidden_size=128 \(checkpoint: 96\)"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, path, num_attention_heads=2, hidden_size=128)
    with pytest.raises(ValueError, match=r"dataset 'ade20k' has 150 classes but the checkpoint's class head predicts"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, path, num_attention_heads=2, dataset="ade20k")
    with pytest.raises(ValueError, match=r"unknown EoMTConfig fields \['num_heads'\]"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, path, num_heads=2)

    model = convert_original_checkpoint(EoMTForUniversalSegmentation, path, num_attention_heads=2, image_size=96, dataset="cityscapes")
    assert model.config.num_attention_heads == 2
    assert model.config.id2label[0] == "road" and model.config.label2id["bicycle"] == 18
    assert model.eomt.embeddings.position_embeddings.shape == (1, 36, 96)  # resampled from the stored 4x4 grid to 6x6
    source.attn_mask_probs.zero_()
    model.attn_mask_probs.zero_()
    pixel_values = torch.randn(1, 3, 96, 96)  # the source interpolates its 4x4 positions at run time, identically
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).masks_queries_logits, source(pixel_values).masks_queries_logits)


def test_missing_and_unrecognised_keys_are_named(tmp_path):
    state = original_state_dict(source_model("dinov2-swiglu"))
    del state[BACKBONE + "blocks.1.ls2.gamma"]
    state[BACKBONE + "blocks.1.attn.q_norm.weight"] = torch.ones(64)
    message = r"last\.ckpt: .*missing keys \['network\.encoder\.backbone\.blocks\.1\.ls2\.gamma'\]; "
    message += r"unexpected keys \['network\.encoder\.backbone\.blocks\.1\.attn\.q_norm\.weight'\]"
    with pytest.raises(ValueError, match=message):
        convert_original_checkpoint(EoMTForUniversalSegmentation, save_checkpoint(state, tmp_path, "ckpt"))



def test_not_an_original_checkpoint(tmp_path):
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(ValueError, match=r"other\.bin: keys outside `network\.`: \['encoder\.layer\.0\.weight'\] \(not an"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, tmp_path / "other.bin")



def test_pixel_statistics_other_than_imagenet_are_refused(tmp_path):
    state = original_state_dict(source_model("dinov2-registers"))
    state["network.encoder.pixel_std"] = torch.ones(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"network\.encoder\.pixel_std is \[1\.0, 1\.0, 1\.0\], not ImageNet's"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, save_checkpoint(state, tmp_path, "bin"))


def test_dinov3_delta_checkpoint_adds_the_pretrained_backbone(tmp_path):
    """The authors' DINOv3 releases hold `final - initial`, where the initial model has the pre-trained DINOv3
    backbone, zero heads and queries, and its buffers' initial values (`delta_weights` in their Lightning module)."""
    source = source_model("dinov3")
    source.attn_mask_probs.zero_()  # annealed
    full = original_state_dict(source)
    config = source.config
    base = DINOv3ViTModel(DINOv3ViTConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=1, intermediate_size=128, patch_size=16,
        num_register_tokens=4, layer_norm_eps=1e-5, rope_theta=100.0, pos_embed_rescale=2.0,
    ))  # fmt: skip
    perturb_(base).save_pretrained(tmp_path / "dinov3")
    initial = {key: full[key] for key in ("network.encoder.pixel_mean", "network.encoder.pixel_std")}
    initial["network.attn_mask_probs"] = torch.ones(config.num_blocks)
    for key, value in base.state_dict().items():
        if key != "embeddings.mask_token":
            key = key.replace("embeddings.", "patch_embed.", 1).replace("model.layer.", "blocks.", 1)
            initial[BACKBONE + key] = value
    delta = {key: value - initial.get(key, torch.zeros_like(value)) for key, value in full.items()}
    path = save_checkpoint(delta, tmp_path, "bin")

    with pytest.raises(ValueError, match=r"holds deltas to the pre-trained DINOv3 weights .* pass .* delta_base"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, path)
    with pytest.raises(ValueError, match="holds full weights"):
        convert_original_checkpoint(EoMTForUniversalSegmentation, save_checkpoint(full, tmp_path, "safetensors"), delta_base=tmp_path / "dinov3")
    model = convert_original_checkpoint(EoMTForUniversalSegmentation, path, delta_base=tmp_path / "dinov3")
    assert model.config.pos_embed_rescale == 2.0 and model.config.layer_norm_eps == 1e-5
    assert torch.equal(model.attn_mask_probs, torch.zeros(2))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)

