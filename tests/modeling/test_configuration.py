"""`EoMTConfig` field checks: a field of the wrong type or range is a `ValueError` naming it, before anything is
computed from it (a hand-edited config.json holding "64" or 2.5 used to fail deep inside the model)."""

import re

import pytest

from modeling_eomt import EoMTConfig
from tests.modeling.helpers import tiny_config


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("hidden_size", "64", "hidden_size must be an integer, got '64' (str)"),
        ("num_hidden_layers", 2.5, "num_hidden_layers must be an integer, got 2.5 (float)"),
        ("num_attention_heads", 0, "num_attention_heads must be >= 1, got 0"),
        ("num_queries", True, "num_queries must be an integer, got True (bool)"),
        ("num_register_tokens", -1, "num_register_tokens must be >= 0, got -1"),
        ("intermediate_size", 0, "intermediate_size must be >= 1, got 0"),
        ("layer_norm_eps", 0.0, "layer_norm_eps must be > 0, got 0.0"),
        ("layer_norm_eps", "1e-6", "layer_norm_eps must be a finite number, got '1e-6' (str)"),
        ("mlp_ratio", float("inf"), "mlp_ratio must be a finite number, got inf"),
        ("drop_path_rate", 1.5, "drop_path_rate must be in [0, 1], got 1.5"),
        ("no_object_weight", -0.1, "no_object_weight must be >= 0, got -0.1"),
        ("hidden_act", 3, "hidden_act must be the name of an activation, got 3"),
        ("position_embedding_type", "sinusoidal", "position_embedding_type='sinusoidal' is not one of"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_named(field, value, expected):
    with pytest.raises(ValueError, match="Invalid EoMTConfig: .*" + re.escape(expected)):
        tiny_config(**{field: value})


def test_valid_values_of_every_kind_pass():
    config = tiny_config(mlp_ratio=4, intermediate_size=None, pos_embed_jitter=None, layerscale_value=-0.5,
                         drop_path_rate=1.0, num_upscale_blocks=0)  # fmt: skip
    assert config.mlp_ratio == 4 and config.num_upscale_blocks == 0
    assert EoMTConfig.from_size("S", num_labels=3).num_hidden_layers == 12


def test_several_problems_are_reported_together():
    with pytest.raises(ValueError, match="hidden_size must be an integer.*num_queries must be >= 1"):
        tiny_config(hidden_size=32.0, num_queries=0)
