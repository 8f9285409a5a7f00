"""Geometry adaptation: the patch-embedding kernel resampled 14 -> 16, position embeddings resampled to the grid,
prefix positions absorbed into the class and register tokens."""

import pytest
import torch
import torch.nn.functional as F
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.backbones import init_from_backbone
from modeling_eomt.checkpoints.geometry import (
    CLASS_TOKEN,
    PATCH_KERNEL,
    POSITIONS,
    REGISTER_TOKENS,
    adapt_geometry,
    resize_patch_kernel,
    timm_position_layout,
)
from modeling_eomt.checkpoints.original import convert_original_checkpoint
from tests.modeling.checkpoints.references import (
    BACKBONE,
    TINY,
    TimmBackbone,
    dinov2,
    hidden_states,
    max_differences,
    original_state_dict,
    patchwise_resize,
    randomise,
    save,
    save_checkpoint,
    source_model,
)
from tests.modeling.helpers import tiny_config


def test_patch_kernel_resize_preserves_projections():
    kernel = torch.randn(8, 3, 14, 14)
    patches = F.interpolate(torch.randn(4, 3, 4, 4), size=(14, 14), mode="bicubic", align_corners=False)  # smooth
    resized = resize_patch_kernel(kernel, 16)
    assert resized.shape == (8, 3, 16, 16)
    original = torch.einsum("oihw,bihw->bo", kernel, patches)
    for antialias in (True, False):
        upsampled = F.interpolate(patches, size=(16, 16), mode="bicubic", antialias=antialias, align_corners=False)
        projected = torch.einsum("oihw,bihw->bo", resized, upsampled)
        assert (projected - original).norm() / original.norm() < (1e-4 if antialias else 0.05)



@pytest.mark.parametrize("model_type", ["dinov2", "dinov2_with_registers", "dinov3_vit"])
def test_patch14_to_16_resampling_and_position_interpolation_keep_hidden_states(tmp_path, model_type):
    """A patch-14 backbone stored for a 2x2 grid initialises a patch-16 EoMT for a 4x4 grid: on patch-wise resized
    inputs, the hidden states before the queries join equal the source model's on the 4x4-grid original input."""
    if model_type == "dinov3_vit":
        config = DINOv3ViTConfig(**TINY, intermediate_size=48, image_size=28, patch_size=14, num_register_tokens=2, layer_norm_eps=1e-5)
        reference = randomise(DINOv3ViTModel(config))
    else:
        reference = dinov2(model_type == "dinov2_with_registers", 28)
    model = init_from_backbone(EoMTModel, save(reference, tmp_path), image_size=64, num_blocks=1, num_queries=3)
    assert model.config.patch_size == 16 and model.embeddings.patch_embeddings.weight.shape[-1] == 16
    if model_type != "dinov3_vit":
        assert model.embeddings.position_embeddings.shape == (1, 16, 32)  # interpolated from the stored 2x2 grid
    pixel_values = F.interpolate(torch.randn(2, 3, 8, 8), size=(56, 56), mode="bicubic")  # 4x4 patches of 14
    ours = hidden_states(model, patchwise_resize(pixel_values, 14, 16))
    theirs = hidden_states(reference, pixel_values)
    for depth in range(model.first_query_block + 1):
        torch.testing.assert_close(ours[depth], theirs[depth], atol=2e-4, rtol=0)  # a plain bicubic resize: ~0.2 off


def test_all_prefix_positions_layout(tmp_path):
    """timm's `no_embed_class=False` with registers: class and register tokens both have positions."""
    source = source_model("dinov2-registers")
    state = original_state_dict(source)
    prefix_positions = torch.randn(1, 5, 64)
    state[BACKBONE + "cls_token"] = state[BACKBONE + "cls_token"] - prefix_positions[:, :1]
    state[BACKBONE + "reg_token"] = state[BACKBONE + "reg_token"] - prefix_positions[:, 1:]
    state[BACKBONE + "pos_embed"] = torch.cat((prefix_positions, state[BACKBONE + "pos_embed"]), dim=1)
    model = convert_original_checkpoint(EoMTForUniversalSegmentation, save_checkpoint(state, tmp_path, "bin"))
    registers = model.eomt.embeddings.register_tokens
    torch.testing.assert_close(registers, source.eomt.embeddings.register_tokens, atol=1e-6, rtol=0)
    differences = max_differences(model, state, TimmBackbone(state, 1), torch.rand(1, 3, 64, 64))
    assert max(differences.values()) < 1e-4, differences



def test_adapt_geometry_absorbs_prefix_positions_and_resamples_the_grid():
    config = tiny_config("dinov2-registers-swiglu", patch_size=16, image_size=64)  # 4x4 grid, 4 registers
    cls_token, registers, positions = torch.randn(1, 1, 32), torch.randn(1, 4, 32), torch.randn(1, 2 + 9, 32)
    state = {CLASS_TOKEN: cls_token, REGISTER_TOKENS: registers, POSITIONS: positions, PATCH_KERNEL: torch.randn(32, 3, 14, 14)}
    adapted = adapt_geometry(state, config, prefix_positions=2)  # class and first register position, then 3x3 patches
    torch.testing.assert_close(adapted[CLASS_TOKEN], cls_token + positions[:, :1])
    torch.testing.assert_close(adapted[REGISTER_TOKENS][:, :1], registers[:, :1] + positions[:, 1:2])
    torch.testing.assert_close(adapted[REGISTER_TOKENS][:, 1:], registers[:, 1:])
    assert adapted[POSITIONS].shape == (1, 16, 32) and adapted[PATCH_KERNEL].shape == (32, 3, 16, 16)
    kept = adapt_geometry({POSITIONS: positions[:, 2:]}, tiny_config(image_size=48))  # the stored 3x3 grid
    assert torch.equal(kept[POSITIONS], positions[:, 2:])
    with pytest.raises(ValueError, match=r"position embeddings of shape \(1, 11, 32\) are not 1 prefix position"):
        adapt_geometry(state, config, prefix_positions=1)


def test_timm_position_layouts():
    assert timm_position_layout(16, num_registers=4) == (4, 0)  # no_embed_class: patches only
    assert timm_position_layout(17, num_registers=0) == (4, 1)  # the class token's position first
    assert timm_position_layout(21, num_registers=4) == (4, 5)  # class and register positions
    with pytest.raises(ValueError, match=r"pos_embed has 18 positions: not a square patch grid plus 0, 1, 5"):
        timm_position_layout(18, num_registers=4)
