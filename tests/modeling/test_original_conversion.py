"""The authors' original checkpoints (`network.` keys, timm DINOv2 / renamed transformers DINOv3 backbones).

No real checkpoint can be downloaded here, so the tests write synthetic ones with the authors' key names and shapes:
the values come from one of our tiny models, mapped by the explicit table in `original_state_dict` (written from the
authors' `models/eomt.py`, `models/vit.py`, `models/scale_block.py` and timm's `vision_transformer.py`, not from the
converter). Besides comparing with the source model, the converted model is compared with a direct evaluation of the
original tensors following the authors' forward pass (`authors_forward`).
"""

import argparse
import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from transformers import (
    AutoModelForUniversalSegmentation,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    EomtForUniversalSegmentation,
)

from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.conversion import convert_original_checkpoint
from modeling_eomt.labels import DATASET_CLASSES
from tests.modeling.helpers import perturb_
from training.cli import main

BACKBONE = "network.encoder.backbone."
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COMMON = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=1, num_blocks=2, num_queries=5, num_labels=4)
VARIANTS = {  # the authors' upscale count is max(1, log2(patch) - 2): 2 for patch 16, 1 for patch 14
    "dinov2-registers": dict(num_register_tokens=4, patch_size=16, image_size=64),
    "dinov2-class-position": dict(num_register_tokens=0, patch_size=14, image_size=56, num_upscale_blocks=1),
    "dinov2-swiglu": dict(num_register_tokens=4, ffn_type="swiglu", patch_size=14, image_size=56, num_upscale_blocks=1),
    "dinov3": dict(position_embedding_type="rope", num_register_tokens=4, key_bias=False, intermediate_size=128),
    "dinov3-gated": dict(
        position_embedding_type="rope", num_register_tokens=2, key_bias=False, ffn_type="swiglu", intermediate_size=96
    ),
}


def source_model(variant: str, **overrides) -> EoMTForUniversalSegmentation:
    fields = {**COMMON, **VARIANTS[variant], **overrides}
    fields["layer_norm_eps"] = 1e-5 if variant.startswith("dinov3") else 1e-6  # transformers' DINOv3, timm's DINOv2
    return perturb_(EoMTForUniversalSegmentation(EoMTConfig(**fields))).eval()


def original_state_dict(model: EoMTForUniversalSegmentation) -> dict[str, Tensor]:
    """The authors' state dict of `model`, key by key. DINOv2 models without registers get a class-token position
    embedding (timm's `no_embed_class=False`); with registers, patch positions only (`no_embed_class=True`)."""
    config, ours = model.config, {key: value.clone() for key, value in model.state_dict().items()}
    out: dict[str, Tensor] = {}

    def put(original: str, key: str, params: tuple[str, ...] = ("weight", "bias")) -> None:
        for param in params:
            out[f"{original}.{param}"] = ours[f"{key}.{param}"]

    if config.position_embedding_type == "rope":  # transformers' DINOv3ViTEmbeddings, renamed `patch_embed`
        out[BACKBONE + "patch_embed.cls_token"] = ours["eomt.embeddings.cls_token"]
        out[BACKBONE + "patch_embed.register_tokens"] = ours["eomt.embeddings.register_tokens"]
        put(BACKBONE + "patch_embed.patch_embeddings", "eomt.embeddings.patch_embeddings")
    else:  # timm VisionTransformer
        put(BACKBONE + "patch_embed.proj", "eomt.embeddings.patch_embeddings")
        patch_positions = ours["eomt.embeddings.position_embeddings"]
        if config.num_register_tokens:
            out[BACKBONE + "cls_token"] = ours["eomt.embeddings.cls_token"]
            out[BACKBONE + "reg_token"] = ours["eomt.embeddings.register_tokens"]
            out[BACKBONE + "pos_embed"] = patch_positions
        else:
            class_position = torch.randn(1, 1, config.hidden_size)
            out[BACKBONE + "cls_token"] = ours["eomt.embeddings.cls_token"] - class_position
            out[BACKBONE + "pos_embed"] = torch.cat((class_position, patch_positions), dim=1)
    for index in range(config.num_hidden_layers):
        block, layer = f"{BACKBONE}blocks.{index}.", f"eomt.layers.{index}."
        put(block + "norm1", layer + "norm1")
        put(block + "norm2", layer + "norm2")
        if config.position_embedding_type == "rope":  # transformers' DINOv3ViTLayer
            for name, weight in zip(("q_proj", "k_proj", "v_proj"), ours[layer + "attention.qkv.weight"].chunk(3)):
                out[f"{block}attention.{name}.weight"] = weight
            out[block + "attention.q_proj.bias"] = ours[layer + "attention.q_bias"]  # DINOv3: no key bias
            out[block + "attention.v_proj.bias"] = ours[layer + "attention.v_bias"]
            put(block + "attention.o_proj", layer + "attention.proj")
            put(block + "layer_scale1", layer + "layer_scale1", ("lambda1",))
            put(block + "layer_scale2", layer + "layer_scale2", ("lambda1",))
            if config.ffn_type == "mlp":
                put(block + "mlp.up_proj", layer + "mlp.fc1")
            else:
                for param in ("weight", "bias"):
                    gate, up = ours[f"{layer}mlp.fc1.{param}"].chunk(2)
                    out[f"{block}mlp.gate_proj.{param}"], out[f"{block}mlp.up_proj.{param}"] = gate, up
            put(block + "mlp.down_proj", layer + "mlp.fc2")
        else:  # timm Block
            put(block + "attn.qkv", layer + "attention.qkv")
            put(block + "attn.proj", layer + "attention.proj")
            out[block + "ls1.gamma"] = ours[layer + "layer_scale1.lambda1"]
            out[block + "ls2.gamma"] = ours[layer + "layer_scale2.lambda1"]
            put(block + "mlp.fc1", layer + "mlp.fc1")  # SwiGLUPacked: (gate, up) stacked in fc1, gate first
            put(block + "mlp.fc2", layer + "mlp.fc2")
    put(BACKBONE + "norm", "eomt.layernorm")
    out["network.q.weight"] = ours["eomt.query.weight"]
    put("network.class_head", "class_predictor")
    for index, fc in ((0, "fc1"), (2, "fc2"), (4, "fc3")):  # nn.Sequential(Linear, GELU, Linear, GELU, Linear)
        put(f"network.mask_head.{index}", f"mask_head.{fc}")
    for index in range(config.num_upscale_blocks):  # ScaleBlock(conv1, act, conv2, norm)
        put(f"network.upscale.{index}.conv1", f"upscale_blocks.{index}.conv_transpose")
        put(f"network.upscale.{index}.conv2", f"upscale_blocks.{index}.depthwise_conv", ("weight",))
        put(f"network.upscale.{index}.norm", f"upscale_blocks.{index}.norm")
    out["network.attn_mask_probs"] = ours["attn_mask_probs"]
    out["network.encoder.pixel_mean"] = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    out["network.encoder.pixel_std"] = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The authors' forward pass (models/eomt.py), evaluated on the original tensors
# ----------------------------------------------------------------------------------------------------------------------


class TimmBackbone:
    """timm's DINOv2 `VisionTransformer` (pre-norm blocks, LayerScale, fused qkv, eps 1e-6) on original tensors."""

    def __init__(self, state: dict[str, Tensor], num_heads: int) -> None:
        self.w = {key.removeprefix(BACKBONE): value for key, value in state.items() if key.startswith(BACKBONE)}
        self.num_heads = num_heads
        self.num_prefix = 1 + (self.w["reg_token"].shape[1] if "reg_token" in self.w else 0)
        self.blocks = [self.block(i) for i in range(len({k.split(".")[1] for k in self.w if k.startswith("blocks.")}))]

    def layer_norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], 1e-6)

    def embed(self, pixels: Tensor) -> Tensor:
        w = self.w
        kernel = w["patch_embed.proj.weight"]
        x = F.conv2d(pixels, kernel, w["patch_embed.proj.bias"], stride=kernel.shape[-1]).flatten(2).transpose(1, 2)
        prefix = [w[name].expand(len(x), -1, -1) for name in ("cls_token", "reg_token") if name in w]
        if w["pos_embed"].shape[1] == x.shape[1]:  # no_embed_class: add, then concatenate
            return torch.cat(prefix + [x + w["pos_embed"]], dim=1)
        return torch.cat(prefix + [x], dim=1) + w["pos_embed"]  # the class token has a position too

    def norm(self, x: Tensor) -> Tensor:
        return self.layer_norm(x, "norm")

    def block(self, index: int):
        w, p = self.w, f"blocks.{index}."

        def attention(x: Tensor, mask: Tensor | None) -> Tensor:
            batch, tokens, channels = x.shape
            qkv = F.linear(x, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])
            query, key, value = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(query, key, value, mask).transpose(1, 2).reshape(batch, tokens, channels)
            return F.linear(out, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])

        def mlp(x: Tensor) -> Tensor:
            x = F.linear(x, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])
            if w[p + "mlp.fc1.weight"].shape[0] == 2 * w[p + "mlp.fc2.weight"].shape[1]:  # GluMlp(gate_last=False)
                gate, up = x.chunk(2, dim=-1)
                x = F.silu(gate) * up
            else:
                x = F.gelu(x)
            return F.linear(x, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])

        def forward(x: Tensor, mask: Tensor | None, rope) -> Tensor:
            x = x + w[p + "ls1.gamma"] * attention(self.layer_norm(x, p + "norm1"), mask)
            return x + w[p + "ls2.gamma"] * mlp(self.layer_norm(x, p + "norm2"))

        return forward

    def rope(self, pixels: Tensor):
        return None


class TransformersDinov3Backbone:
    """The authors' DINOv3 backbone: transformers' `DINOv3ViTModel` holding the original tensors."""

    def __init__(self, state: dict[str, Tensor], config: EoMTConfig) -> None:
        gated = config.ffn_type != "mlp"
        dinov3_config = DINOv3ViTConfig(
            hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads, intermediate_size=config.ffn_hidden_size,
            patch_size=config.patch_size, num_register_tokens=config.num_register_tokens, use_gated_mlp=gated,
            hidden_act="silu" if gated else "gelu", layer_norm_eps=1e-5, key_bias=False, attn_implementation="sdpa",
        )  # fmt: skip
        self.model = DINOv3ViTModel(dinov3_config).eval()
        renamed = {}
        for key, value in state.items():
            if key.startswith(BACKBONE):
                key = key.removeprefix(BACKBONE).replace("patch_embed.", "embeddings.", 1)
                renamed[key.replace("blocks.", "model.layer.", 1) if key.startswith("blocks.") else key] = value
        result = self.model.load_state_dict(renamed, strict=False)
        assert result.missing_keys == ["embeddings.mask_token"] and not result.unexpected_keys, result
        self.num_prefix = 1 + config.num_register_tokens
        self.blocks = [self.block(layer) for layer in self.model.model.layer]

    def embed(self, pixels: Tensor) -> Tensor:
        return self.model.embeddings(pixels)

    def rope(self, pixels: Tensor):
        return self.model.rope_embeddings(pixels)

    def norm(self, x: Tensor) -> Tensor:
        return self.model.norm(x)

    @staticmethod
    def block(layer):
        def forward(x: Tensor, mask: Tensor | None, rope) -> Tensor:
            x = x + layer.layer_scale1(layer.attention(layer.norm1(x), mask, rope)[0])
            return x + layer.layer_scale2(layer.mlp(layer.norm2(x)))

        return forward


def authors_predict(state: dict[str, Tensor], x: Tensor, num_queries: int, num_prefix: int, grid: tuple[int, int]):
    """`EoMT._predict`: class head on the queries; mask head (Linear-GELU-Linear-GELU-Linear) times upscaled patches."""
    queries = x[:, :num_queries]
    class_logits = F.linear(queries, state["network.class_head.weight"], state["network.class_head.bias"])
    embeddings = queries
    for index in (0, 2, 4):
        head = f"network.mask_head.{index}."
        embeddings = F.linear(embeddings, state[head + "weight"], state[head + "bias"])
        embeddings = F.gelu(embeddings) if index < 4 else embeddings
    features = x[:, num_queries + num_prefix :].transpose(1, 2).reshape(x.shape[0], -1, *grid)
    index = 0
    while f"network.upscale.{index}.conv1.weight" in state:  # ScaleBlock: ConvTranspose2d, GELU, dw conv, LayerNorm2d
        scale = f"network.upscale.{index}."
        features = F.conv_transpose2d(features, state[scale + "conv1.weight"], state[scale + "conv1.bias"], stride=2)
        features = F.conv2d(F.gelu(features), state[scale + "conv2.weight"], padding=1, groups=features.shape[1])
        normed = features.permute(0, 2, 3, 1)
        normed = F.layer_norm(normed, normed.shape[-1:], state[scale + "norm.weight"], state[scale + "norm.bias"], 1e-6)
        features = normed.permute(0, 3, 1, 2)
        index += 1
    return torch.einsum("bqc,bchw->bqhw", embeddings, features), class_logits


@torch.no_grad()
def authors_forward(state: dict[str, Tensor], backbone, images: Tensor, masked: bool) -> tuple[Tensor, Tensor]:
    """`EoMT.forward` for images in [0, 1] with every `attn_mask_prob` 1 (`masked`) or 0; final mask/class logits."""
    pixels = (images - state["network.encoder.pixel_mean"]) / state["network.encoder.pixel_std"]
    queries = state["network.q.weight"]
    num_queries, num_blocks = queries.shape[0], state["network.attn_mask_probs"].numel()
    kernel = state.get(BACKBONE + "patch_embed.proj.weight", state.get(BACKBONE + "patch_embed.patch_embeddings.weight"))
    patch = kernel.shape[-1]
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    rope = backbone.rope(pixels)
    x = backbone.embed(pixels)
    first = len(backbone.blocks) - num_blocks
    for index, block in enumerate(backbone.blocks):
        if index == first:
            x = torch.cat((queries[None].expand(len(x), -1, -1), x), dim=1)
        mask = None
        if index >= first:
            mask_logits, _ = authors_predict(state, backbone.norm(x), num_queries, backbone.num_prefix, grid)
            mask = torch.ones(len(x), x.shape[1], x.shape[1], dtype=torch.bool)
            allowed = F.interpolate(mask_logits, grid, mode="bilinear").flatten(2) > 0
            mask[:, :num_queries, num_queries + backbone.num_prefix :] = allowed if masked else True  # p=0: unmasked
            mask = mask[:, None]
        x = block(x, mask, rope)
    return authors_predict(state, backbone.norm(x), num_queries, backbone.num_prefix, grid)


def max_differences(model: EoMTForUniversalSegmentation, state, backbone, images: Tensor) -> dict[str, float]:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    differences = {}
    for masked in (False, True):
        model.set_attn_mask_probs(float(masked))
        with torch.no_grad():
            out = model((images - mean) / std)
        mask_logits, class_logits = authors_forward(state, backbone, images, masked)
        differences[f"class p={int(masked)}"] = (out.class_queries_logits - class_logits).abs().max().item()
        differences[f"mask p={int(masked)}"] = (out.masks_queries_logits - mask_logits).abs().max().item()
    return differences


def save_checkpoint(state: dict[str, Tensor], path, kind: str):
    """Write `state` as the authors' `pytorch_model.bin`, a Lightning `.ckpt` or a safetensors file."""
    if kind == "bin":
        torch.save(state, path / "pytorch_model.bin")
        return path / "pytorch_model.bin"
    if kind == "ckpt":  # as Lightning writes it, with torch.compile's `_orig_mod` and the loss buffer
        compiled = {key.replace("network.", "network._orig_mod.", 1): value for key, value in state.items()}
        num_classes = state["network.class_head.weight"].shape[0]
        compiled["criterion.empty_weight"] = torch.ones(num_classes)
        checkpoint = {"state_dict": compiled, "epoch": 11, "global_step": 73910, "pytorch-lightning_version": "2.5.1"}
        torch.save(checkpoint, path / "last.ckpt")
        return path / "last.ckpt"
    save_file({key: value.contiguous() for key, value in state.items()}, path / "model.safetensors")
    return path / "model.safetensors"


# ----------------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, kind", [
    ("dinov2-registers", "bin"), ("dinov2-class-position", "ckpt"), ("dinov2-swiglu", "bin"), ("dinov3", "ckpt"),
    ("dinov3-gated", "safetensors"),
])  # fmt: skip
def test_converts_original_checkpoint(tmp_path, variant, kind):
    source = source_model(variant)
    state = original_state_dict(source)
    model = convert_original_checkpoint(save_checkpoint(state, tmp_path, kind), tmp_path / "converted")

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


def test_all_prefix_positions_layout(tmp_path):
    """timm's `no_embed_class=False` with registers: class and register tokens both have positions."""
    source = source_model("dinov2-registers")
    state = original_state_dict(source)
    prefix_positions = torch.randn(1, 5, 64)
    state[BACKBONE + "cls_token"] = state[BACKBONE + "cls_token"] - prefix_positions[:, :1]
    state[BACKBONE + "reg_token"] = state[BACKBONE + "reg_token"] - prefix_positions[:, 1:]
    state[BACKBONE + "pos_embed"] = torch.cat((prefix_positions, state[BACKBONE + "pos_embed"]), dim=1)
    model = convert_original_checkpoint(save_checkpoint(state, tmp_path, "bin"))
    registers = model.eomt.embeddings.register_tokens
    torch.testing.assert_close(registers, source.eomt.embeddings.register_tokens, atol=1e-6, rtol=0)
    differences = max_differences(model, state, TimmBackbone(state, 1), torch.rand(1, 3, 64, 64))
    assert max(differences.values()) < 1e-4, differences


def test_overrides_heads_image_size_and_labels(tmp_path):
    source = source_model("dinov2-registers", hidden_size=96, num_attention_heads=2, num_labels=19)
    path = save_checkpoint(original_state_dict(source), tmp_path, "bin")
    with pytest.raises(ValueError, match=r"hidden size 96 is not a multiple of 64: pass num_attention_heads"):
        convert_original_checkpoint(path)
    with pytest.raises(ValueError, match=r"fixed by the checkpoint's tensors: hidden_size=128 \(checkpoint: 96\)"):
        convert_original_checkpoint(path, num_attention_heads=2, hidden_size=128)
    with pytest.raises(ValueError, match=r"dataset 'ade20k' has 150 classes but the checkpoint's class head predicts"):
        convert_original_checkpoint(path, num_attention_heads=2, dataset="ade20k")
    with pytest.raises(ValueError, match=r"unknown EoMTConfig fields \['num_heads'\]"):
        convert_original_checkpoint(path, num_heads=2)

    model = convert_original_checkpoint(path, num_attention_heads=2, image_size=96, dataset="cityscapes")
    assert model.config.num_attention_heads == 2
    assert model.config.id2label[0] == "road" and model.config.label2id["bicycle"] == 18
    assert model.eomt.embeddings.position_embeddings.shape == (1, 36, 96)  # resampled from the stored 4x4 grid to 6x6
    source.set_attn_mask_probs(0.0)
    model.set_attn_mask_probs(0.0)
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
        convert_original_checkpoint(save_checkpoint(state, tmp_path, "ckpt"))


def test_not_an_original_checkpoint(tmp_path):
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(ValueError, match=r"other\.bin: keys outside `network\.`: \['encoder\.layer\.0\.weight'\] \(not an"):
        convert_original_checkpoint(tmp_path / "other.bin")


def test_non_tensor_pickle_is_refused(tmp_path):
    state = original_state_dict(source_model("dinov2-registers"))
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tmp_path / "unsafe.ckpt")
    with pytest.raises(ValueError, match=r"unsafe\.ckpt: could not be read as a weights-only PyTorch checkpoint"):
        convert_original_checkpoint(tmp_path / "unsafe.ckpt")


def test_pixel_statistics_other_than_imagenet_are_refused(tmp_path):
    state = original_state_dict(source_model("dinov2-registers"))
    state["network.encoder.pixel_std"] = torch.ones(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"network\.encoder\.pixel_std is \[1\.0, 1\.0, 1\.0\], not ImageNet's"):
        convert_original_checkpoint(save_checkpoint(state, tmp_path, "bin"))


def test_dinov3_delta_checkpoint_adds_the_pretrained_backbone(tmp_path):
    """The authors' DINOv3 releases hold `final - initial`, where the initial model has the pre-trained DINOv3
    backbone, zero heads and queries, and its buffers' initial values (`delta_weights` in their Lightning module)."""
    source = source_model("dinov3")
    source.set_attn_mask_probs(0.0)  # annealed
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
        convert_original_checkpoint(path)
    with pytest.raises(ValueError, match="holds full weights"):
        convert_original_checkpoint(save_checkpoint(full, tmp_path, "safetensors"), delta_base=tmp_path / "dinov3")
    model = convert_original_checkpoint(path, delta_base=tmp_path / "dinov3")
    assert model.config.pos_embed_rescale == 2.0 and model.config.layer_norm_eps == 1e-5
    assert torch.equal(model.attn_mask_probs, torch.zeros(2))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)


def test_dataset_presets():
    assert {name: len(classes) for name, classes in DATASET_CLASSES.items()} == {
        "coco_panoptic": 133, "coco_instance": 80, "ade20k": 150, "cityscapes": 19,
    }  # fmt: skip
    assert DATASET_CLASSES["coco_instance"] == DATASET_CLASSES["coco_panoptic"][:80]
    for classes in DATASET_CLASSES.values():
        assert len(set(classes)) == len(classes) and all(name == name.strip() for name in classes)
    from modeling_eomt.labels import COCO_PANOPTIC_CATEGORIES

    ids = [category_id for category_id, _ in COCO_PANOPTIC_CATEGORIES]
    assert ids == sorted(ids) and ids[-1] == 200  # contiguous index = rank of the category id, as the authors map them


# ----------------------------------------------------------------------------------------------------------------------
# `eomt convert`
# ----------------------------------------------------------------------------------------------------------------------


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
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "nowhere")]) == 1  # one line, no traceback
    assert re.match(r"error: .*empty: neither a config\.json nor a pytorch_model\.bin", capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"empty: neither a config\.json nor a pytorch_model\.bin"):
        main(["--debug", "convert", str(tmp_path / "empty"), str(tmp_path / "nowhere")])


def test_original_weights_next_to_a_transformers_config(tmp_path):
    """A Hub-style directory with transformers' config.json but the authors' original `pytorch_model.bin`."""
    from modeling_eomt.conversion import save_as_transformers_eomt

    source = source_model("dinov2-registers")
    save_as_transformers_eomt(source, tmp_path / "repo")
    (tmp_path / "repo" / "model.safetensors").unlink()
    save_checkpoint(original_state_dict(source), tmp_path / "repo", "bin")
    with pytest.raises(ValueError, match=r"the authors' original ones \(`network\.` keys\).*eomt convert"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path / "repo")
    assert main(["convert", str(tmp_path / "repo"), str(tmp_path / "out"), "--from", "original"]) == 0
    converted = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "out")
    assert all(torch.equal(value, converted.state_dict()[key]) for key, value in source.state_dict().items())
