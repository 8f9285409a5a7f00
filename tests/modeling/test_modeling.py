"""EoMTConfig / EoMTModel / EoMTForUniversalSegmentation behaviour on tiny configs."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForUniversalSegmentation

from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation, EoMTModel
from tests.modeling.helpers import VARIANTS, perturb_, tiny_config


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shapes_and_intermediate_predictions(variant):
    config = tiny_config(variant)
    model = perturb_(EoMTForUniversalSegmentation(config))
    pixel_values = torch.randn(2, 3, 64, 64)

    model.train()
    out = model(pixel_values)
    assert out.class_queries_logits.shape == (2, 5, 5)
    assert out.masks_queries_logits.shape == (2, 5, 16, 16)  # 1/4 of the input for patch 16, 2 upscale blocks
    assert len(out.intermediate_masks_queries_logits) == config.num_blocks
    assert all(m.shape == (2, 5, 16, 16) for m in out.intermediate_masks_queries_logits)
    assert len(out.intermediate_class_queries_logits) == config.num_blocks

    model.eval()
    model.set_attn_mask_probs(1.0)
    assert len(model(pixel_values).intermediate_masks_queries_logits) == config.num_blocks
    model.set_attn_mask_probs([0.0, 1.0])
    assert len(model(pixel_values).intermediate_masks_queries_logits) == 1


def test_mask_free_inference_computes_no_intermediate_prediction(monkeypatch):
    model = EoMTForUniversalSegmentation(tiny_config()).eval()
    model.set_attn_mask_probs(0.0)
    calls = []
    original = model._predict_masks_and_classes
    monkeypatch.setattr(model, "_predict_masks_and_classes", lambda *args: calls.append(1) or original(*args))
    monkeypatch.setattr(model, "_sample_query_mask", lambda *args: pytest.fail("a mask was built"))
    out = model(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1  # the final prediction only
    assert out.intermediate_masks_queries_logits is None and out.intermediate_class_queries_logits is None


def test_masked_attention_blocks_query_to_patch_outside_the_mask():
    config = tiny_config("dinov2", num_blocks=1, _attn_implementation="eager")
    model = perturb_(EoMTForUniversalSegmentation(config)).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    out = model(pixel_values, output_attentions=True)
    mask_logits = out.intermediate_masks_queries_logits[0]
    allowed = torch.nn.functional.interpolate(mask_logits, size=(4, 4), mode="bilinear").flatten(2) > 0  # (B, Q, N)
    assert allowed.any() and not allowed.all()
    attention = out.attentions[-1]  # (B, heads, T, T) of the masked block
    num_queries, prefix = config.num_queries, 1 + config.num_register_tokens
    query_to_patch = attention[:, :, :num_queries, num_queries + prefix :]
    assert torch.all(query_to_patch.masked_select(~allowed[:, None].expand_as(query_to_patch)) == 0)
    assert torch.all(query_to_patch.masked_select(allowed[:, None].expand_as(query_to_patch)) > 0)
    # Patch rows are never masked.
    assert torch.all(attention[:, :, num_queries:] > 0)


def test_sample_query_mask_draws_per_image_and_per_query():
    model = EoMTForUniversalSegmentation(tiny_config())
    logits = -torch.ones(8, 400, 16, 16)  # every query masked everywhere before sampling
    full_mask = model._sample_query_mask(logits, (4, 4), 1.0)  # (B, Q, T): queries, class and registers, patches
    assert full_mask.shape == (8, 400, 400 + 1 + 4 + 16)
    assert full_mask[..., : 400 + 1 + 4].all()  # queries and prefix tokens are never masked
    assert not full_mask[..., -16:].any()
    mask = model._sample_query_mask(logits, (4, 4), 0.3)[..., -16:]  # (B, Q, N)
    unmasked_rows = mask.all(-1)  # (B, Q): rows whose mask was disabled
    assert torch.equal(unmasked_rows, mask.any(-1))  # a row is all-on or all-off
    assert 0.6 < unmasked_rows.float().mean() < 0.8  # disabled with probability 1 - 0.3
    assert not torch.equal(unmasked_rows[0], unmasked_rows[1])


@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_sdpa_equals_eager(variant, prob):
    sdpa = perturb_(EoMTForUniversalSegmentation(tiny_config(variant, _attn_implementation="sdpa"))).eval()
    eager = EoMTForUniversalSegmentation(tiny_config(variant, _attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    sdpa.set_attn_mask_probs(prob)
    eager.set_attn_mask_probs(prob)
    pixel_values = torch.randn(2, 3, 64, 64)
    a, b = sdpa(pixel_values), eager(pixel_values)
    torch.testing.assert_close(a.masks_queries_logits, b.masks_queries_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.class_queries_logits, b.class_queries_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["dinov2", "dinov3"])
def test_other_input_sizes(variant):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant))).eval()
    out = model(torch.randn(1, 3, 48, 80))
    assert out.masks_queries_logits.shape == (1, 5, 12, 20)
    assert torch.isfinite(out.masks_queries_logits).all()
    # At the configured size the stored position embeddings are used as they are: a 64x64 crop of a larger
    # input is not the same computation, but the same 64x64 input twice is.
    torch.testing.assert_close(model(torch.ones(1, 3, 64, 64)).class_queries_logits, model(torch.ones(1, 3, 64, 64)).class_queries_logits)


def test_hidden_states_and_attentions_on_request():
    config = tiny_config("dinov2-registers-swiglu")
    model = EoMTModel(config).eval()
    out = model(torch.randn(2, 3, 64, 64), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert len(out.attentions) == config.num_hidden_layers
    first_query_block = config.num_hidden_layers - config.num_blocks
    assert out.hidden_states[first_query_block].shape == (2, 1 + 4 + 16, 32)
    assert out.hidden_states[first_query_block + 1].shape == (2, 5 + 1 + 4 + 16, 32)
    assert out.query_tokens.shape == (2, 5, 32) and out.patch_tokens.shape == (2, 16, 32)
    torch.testing.assert_close(out.patch_tokens, model.layernorm(out.hidden_states[-1])[:, -16:])
    assert model(torch.randn(1, 3, 64, 64)).hidden_states is None


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config("dinov2")
    reference = perturb_(EoMTForUniversalSegmentation(config)).train()
    checkpointed = EoMTForUniversalSegmentation(config).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing
    pixel_values = torch.randn(2, 3, 64, 64)
    for model in (reference, checkpointed):
        torch.manual_seed(1)
        out = model(pixel_values)
        (out.masks_queries_logits.square().mean() + sum(m.mean() for m in out.intermediate_masks_queries_logits)).backward()
    for (name, a), b in zip(reference.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_drop_path_is_random_in_training_only():
    model = perturb_(EoMTForUniversalSegmentation(tiny_config("dinov2", drop_path_rate=0.5)))
    pixel_values = torch.randn(4, 3, 64, 64)
    model.train()
    assert not torch.equal(model(pixel_values).class_queries_logits, model(pixel_values).class_queries_logits)
    model.eval()
    model.set_attn_mask_probs(0.0)
    assert torch.equal(model(pixel_values).class_queries_logits, model(pixel_values).class_queries_logits)


def test_save_and_load_round_trip_with_auto_classes(tmp_path):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config("dinov3"))).eval()
    model.set_attn_mask_probs([0.25, 0.0])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "eomt_vit"

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, EoMTConfig)
    loaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path)
    assert isinstance(loaded, EoMTForUniversalSegmentation)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    model.set_attn_mask_probs(0.0)
    loaded.set_attn_mask_probs(0.0)
    pixel_values = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(pixel_values).masks_queries_logits, loaded(pixel_values).masks_queries_logits)

    encoder = AutoModel.from_pretrained(tmp_path)  # the base model from a segmentation checkpoint
    assert isinstance(encoder, EoMTModel)
    torch.testing.assert_close(encoder(pixel_values).last_hidden_state, model.eomt(pixel_values).last_hidden_state)


def test_transformers_own_eomt_type_is_untouched():
    from transformers import EomtConfig

    assert type(AutoConfig.for_model("eomt")) is EomtConfig
    assert EoMTConfig.model_type not in ("eomt", "eomt_dinov3")


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_blocks=5), "num_blocks=5 must be between 1 and num_hidden_layers=3"),
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size=30 is not divisible by num_attention_heads=4"),
        (dict(ffn_type="moe"), "ffn_type='moe'"),
        (dict(image_size=60), "image_size=60 is not a multiple of patch_size=16"),
    ],
)
def test_invalid_config_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        tiny_config("dinov2", **fields)


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(3, 64, 64), "4 dimensions"),
        (torch.randn(1, 1, 64, 64), "1 channels"),
        (torch.randn(1, 4, 64, 64), "4 channels"),
        (torch.randn(1, 3, 60, 64), "multiples of patch_size=16"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ],
)
def test_bad_pixel_values_give_a_clear_error(pixel_values, message):
    model = EoMTForUniversalSegmentation(tiny_config("dinov2"))
    with pytest.raises(ValueError, match=message):
        model(pixel_values)


def test_missing_keys_are_an_error_unless_heads_are_reinitialised(tmp_path):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config("dinov2")))
    model.save_pretrained(tmp_path / "full")

    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "full" / "model.safetensors")
    for name in ("eomt.layers.1.norm1.weight", "class_predictor.weight"):
        partial = {key: value for key, value in state.items() if key != name}
        (tmp_path / name).mkdir()
        save_file(partial, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
        (tmp_path / name / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"missing keys \['eomt.layers.1.norm1.weight'\]"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path / "eomt.layers.1.norm1.weight")
    with pytest.raises(ValueError, match="missing keys.*class_predictor.weight.*reinitialize_heads=True"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path / "class_predictor.weight")
    with pytest.raises(ValueError, match="missing keys"):  # heads may be re-initialised, the backbone may not
        EoMTForUniversalSegmentation.from_pretrained(tmp_path / "eomt.layers.1.norm1.weight", reinitialize_heads=True)
    loaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "class_predictor.weight", reinitialize_heads=True)
    assert torch.equal(loaded.eomt.layers[1].norm1.weight, model.eomt.layers[1].norm1.weight)


def test_unexpected_keys_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    model = EoMTForUniversalSegmentation(tiny_config("dinov2"))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["eomt.layers.0.attention.k_norm.weight"] = torch.ones(16)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for reinitialize_heads in (False, True):  # not a head: never ignored
        with pytest.raises(ValueError, match=r"unexpected keys \['eomt.layers.0.attention.k_norm.weight'\]"):
            EoMTForUniversalSegmentation.from_pretrained(tmp_path, reinitialize_heads=reinitialize_heads)


def test_new_number_of_classes_needs_reinitialize_heads(tmp_path):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config("dinov2")))
    model.save_pretrained(tmp_path)
    with pytest.raises((ValueError, RuntimeError), match="class_predictor"):
        EoMTForUniversalSegmentation.from_pretrained(tmp_path, num_labels=7)
    loaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path, num_labels=7, reinitialize_heads=True)
    assert loaded.class_predictor.out_features == 8
    assert torch.equal(loaded.eomt.query.weight, model.eomt.query.weight)
    assert torch.equal(loaded.mask_head.fc1.weight, model.mask_head.fc1.weight)


def test_patch_size_14():
    config = tiny_config("dinov2-registers-swiglu", patch_size=14, image_size=56)
    model = perturb_(EoMTForUniversalSegmentation(config)).eval()
    out = model(torch.randn(1, 3, 56, 70))
    assert out.masks_queries_logits.shape == (1, 5, 16, 20)  # grid 4x5, upscaled 4x


@pytest.mark.parametrize("size, shape", [("S", (384, 12, 6)), ("B", (768, 12, 12)), ("L", (1024, 24, 16)), ("g", (1536, 40, 24))])
def test_size_presets_have_dinov2_shapes(size, shape):
    config = EoMTConfig.from_size(size, num_labels=3)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == shape
    assert config.ffn_hidden_size == (4096 if size == "g" else 4 * shape[0])  # ViT-g: SwiGLU, 2/3 of 6144
    with pytest.raises(ValueError, match="Unknown size 'XL'"):
        EoMTConfig.from_size("XL")


def test_vit_small_backbone_has_dinov2_parameter_count():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = EoMTConfig.from_size("S", image_size=224, patch_size=14, num_labels=3)
    ours = EoMTModel(config)
    dinov2 = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=224, patch_size=14))
    backbone = sum(p.numel() for name, p in ours.named_parameters() if not name.startswith("query."))
    # DINOv2 also has a mask token and a class-token position embedding, which EoMT does not use.
    assert backbone == sum(p.numel() for p in dinov2.parameters()) - 2 * 384


# ----------------------------------------------------------------------------------------------------------------------
# Mask-annealing probabilities
# ----------------------------------------------------------------------------------------------------------------------


def test_set_attn_mask_probs_takes_one_value_per_block_or_one_for_all():
    model = EoMTForUniversalSegmentation(tiny_config())  # 2 masked blocks
    model.set_attn_mask_probs([0.25, 1.0])
    assert model.attn_mask_probs.tolist() == [0.25, 1.0]
    model.set_attn_mask_probs(torch.tensor([0.5, 0.0]))
    assert model.attn_mask_probs.tolist() == [0.5, 0.0]
    model.set_attn_mask_probs(0.0)
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "probs, error, message",
    [
        ([0.5], ValueError, r"one probability per masked block \(num_blocks=2\) or a single number, got 1 values"),
        ([0.5, 0.5, 0.5], ValueError, r"num_blocks=2\) or a single number, got 3 values"),
        ([[0.5, 0.5]], ValueError, r"got 2 values of shape \(1, 2\)"),
        ([0.5, 1.5], ValueError, r"must lie in \[0, 1\], got \[0.5, 1.5\]"),
        (-0.1, ValueError, r"must lie in \[0, 1\], got \[-0.1, -0.1\]"),
        ([float("nan"), 0.0], ValueError, r"must lie in \[0, 1\], got \[nan, 0.0\]"),
        ("low", TypeError, "must be a number or a sequence of numbers, got 'low'"),
    ],
)
def test_set_attn_mask_probs_rejects_bad_values_and_keeps_the_old_ones(probs, error, message):
    model = EoMTForUniversalSegmentation(tiny_config())
    model.set_attn_mask_probs([0.25, 0.75])
    with pytest.raises(error, match=message):
        model.set_attn_mask_probs(probs)
    assert model.attn_mask_probs.tolist() == [0.25, 0.75]


@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
def test_mask_free_model_exports_and_matches_eager(variant, tmp_path):
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant)))
    model.set_attn_mask_probs(0.0)
    model.save_pretrained(tmp_path)
    loaded = EoMTForUniversalSegmentation.from_pretrained(tmp_path)  # the probabilities come from the checkpoint
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(pixel_values)
    exported = torch.export.export(loaded.eval(), (pixel_values,))
    actual = exported.module()(pixel_values)
    assert actual.intermediate_masks_queries_logits is None  # the graph is mask-free
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits, atol=1e-6, rtol=1e-6)
