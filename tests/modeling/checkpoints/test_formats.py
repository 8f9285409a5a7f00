"""A state dict's format from its telltale keys."""

import torch
from transformers import (
    DINOv3ViTConfig,
    DINOv3ViTModel,
    EomtConfig,
    EomtDinov3Config,
    EomtDinov3ForUniversalSegmentation,
    EomtForUniversalSegmentation,
)

from modeling_eomt import EoMTForUniversalSegmentation, EoMTModel
from modeling_eomt.checkpoints.formats import detect_state_dict_format
from tests.modeling.checkpoints.references import dinov2, original_state_dict, source_model
from tests.modeling.helpers import tiny_config

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=2, num_labels=2)


def test_every_format_is_told_apart():
    dinov3 = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48))
    original = original_state_dict(source_model("dinov2-registers"))
    compiled = {key.replace("network.", "network._orig_mod.", 1): value for key, value in original.items()}
    state_dicts = {
        "ours": [EoMTForUniversalSegmentation(tiny_config()).state_dict(), EoMTModel(tiny_config()).state_dict()],
        "transformers": [
            EomtForUniversalSegmentation(EomtConfig(**TINY)).state_dict(),
            EomtDinov3ForUniversalSegmentation(EomtDinov3Config(**TINY, intermediate_size=48)).state_dict(),
        ],
        "original": [original, compiled],
        "dinov2": [dinov2(registers=True, image_size=28).state_dict()],
        "dinov3": [dinov3.state_dict(), {key.removeprefix("model."): value for key, value in dinov3.state_dict().items()}],
        None: [{"weight": torch.zeros(1)}, {}],
    }
    for expected, examples in state_dicts.items():
        for state in examples:
            assert detect_state_dict_format(state) == expected, (expected, sorted(state)[:3])
