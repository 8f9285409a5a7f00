"""Reference checkpoints for the checkpoint-format tests, built with transformers' own classes or written key by key.

transformers' DINOv2 / DINOv2-with-registers / DINOv3 backbones are tiny random models saved with `save_pretrained`.
No original checkpoint of the authors can be downloaded here, so `original_state_dict` writes synthetic ones with the
authors' key names and shapes: the values come from one of our tiny models, mapped by an explicit table written from
the authors' `models/eomt.py`, `models/vit.py`, `models/scale_block.py` and timm's `vision_transformer.py`, not from
the converter. Besides comparing with the source model, a converted model is compared with a direct evaluation of the
original tensors following the authors' forward pass (`authors_forward`).
"""

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from transformers import DINOv3ViTConfig, DINOv3ViTModel, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from tests.modeling.helpers import perturb_

# ----------------------------------------------------------------------------------------------------------------------
# transformers' backbones
# ----------------------------------------------------------------------------------------------------------------------

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (layer scales, norms, biases and tokens are constant at init)."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.ndim == 1 and param.numel() == 32 else 0.0))
    return model.eval()


def save(model: torch.nn.Module, tmp_path) -> str:
    path = tmp_path / "backbone"
    model.save_pretrained(path)
    return str(path)


def dinov2(registers: bool, image_size: int) -> torch.nn.Module:
    if registers:
        config = Dinov2WithRegistersConfig(**TINY, image_size=image_size, patch_size=14, num_register_tokens=2, use_swiglu_ffn=True)
        return randomise(Dinov2WithRegistersModel(config))
    return randomise(Dinov2Model(Dinov2Config(**TINY, image_size=image_size, patch_size=14)))


def hidden_states(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(pixel_values, output_hidden_states=True).hidden_states



def patchwise_resize(pixel_values: torch.Tensor, patch: int, new_patch: int) -> torch.Tensor:
    """Resize every `patch` x `patch` tile to `new_patch` x `new_patch` on its own (bicubic, antialiased): the input
    for which FlexiViT's resized kernel reproduces the original patch embeddings."""
    batch, channels, height, width = pixel_values.shape
    rows, cols = height // patch, width // patch
    tiles = pixel_values.reshape(batch, channels, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)
    tiles = F.interpolate(tiles.reshape(-1, channels, patch, patch), size=(new_patch, new_patch), mode="bicubic", antialias=True)
    tiles = tiles.reshape(batch, rows, cols, channels, new_patch, new_patch).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(batch, channels, rows * new_patch, cols * new_patch)



# ----------------------------------------------------------------------------------------------------------------------
# The authors' original checkpoints
# ----------------------------------------------------------------------------------------------------------------------

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
        model.attn_mask_probs.fill_(float(masked))
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

