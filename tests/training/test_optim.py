"""Layer-wise lr decay groups and the two-stage warm-up + polynomial schedule."""

import re

import pytest
import torch

from tests.training.helpers import single_thread, tiny_segmentation_model  # noqa: F401 (fixture)
from training.optim import layer_decay_parameter_groups, two_stage_warmup_poly_factor, two_stage_warmup_poly_schedule

pytestmark = pytest.mark.usefixtures("single_thread")


def expected_lr_scale_and_stage(name, num_layers=3, decay=0.8):
    """The rule of REFERENCE.md, stated on parameter names."""
    block = re.match(r"eomt\.layers\.(\d+)\.", name)
    if block:
        return decay ** (num_layers - 1 - int(block.group(1))), True
    if name.startswith("eomt.embeddings."):  # patch / position embeddings, class and register tokens
        return decay ** (num_layers - 1), True
    if name.startswith("eomt.layernorm."):
        return 1.0, True
    return 1.0, False  # queries, class head, mask head, upscale blocks


def group_of(groups):
    return {id(p): group for group in groups for p in group["params"]}


@pytest.mark.parametrize("variant", ["dinov2-registers-swiglu", "dinov3"])
def test_layer_decay_groups_follow_the_reference_rule(variant):
    model = tiny_segmentation_model(variant=variant)
    groups = layer_decay_parameter_groups(model, learning_rate=1e-4, weight_decay=0.05, layer_decay=0.8)
    lookup = group_of(groups)
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))  # each parameter once
    seen_stages = set()
    for name, parameter in model.named_parameters():
        scale, is_backbone = expected_lr_scale_and_stage(name)
        group = lookup[id(parameter)]
        assert group["lr"] == pytest.approx(1e-4 * scale), name
        assert group["is_backbone"] == is_backbone, name
        assert group["weight_decay"] == 0.05, name  # the authors decay every parameter
        seen_stages.add(is_backbone)
    assert seen_stages == {True, False}
    assert [group["name"] for group in groups] == [
        "head", "backbone.norm", "backbone.block2", "backbone.block1", "backbone.block0", "backbone.embeddings"
    ]  # fmt: skip


def test_exclusion_from_weight_decay_and_frozen_parameters():
    model = tiny_segmentation_model()
    model.class_predictor.weight.requires_grad_(False)
    groups = layer_decay_parameter_groups(model, weight_decay=0.05, exclude_from_weight_decay=True)
    lookup = group_of(groups)
    assert id(model.class_predictor.weight) not in lookup
    no_decay = {name for name, p in model.named_parameters() if p.requires_grad and lookup[id(p)]["weight_decay"] == 0.0}
    expected = {
        name for name, p in model.named_parameters() if p.requires_grad and (
            name.endswith(("bias", "lambda1", "cls_token", "register_tokens", "position_embeddings", "query.weight"))
            or re.search(r"(norm\d?|layernorm)\.weight$", name)
        )
    }  # fmt: skip
    assert no_decay == expected
    assert "eomt.layers.0.norm1.weight" in no_decay and "eomt.layers.0.attention.qkv.weight" not in no_decay
    for name, parameter in model.named_parameters():  # the lr does not depend on the decay
        if parameter.requires_grad:
            assert lookup[id(parameter)]["lr"] == pytest.approx(1e-4 * expected_lr_scale_and_stage(name)[0]), name


def authors_lr(step, base_lr, is_backbone, total_steps, warmup=(500, 1000), power=0.9):
    """`TwoStageWarmupPolySchedule.get_lr` of the authors' code, restated."""
    non_vit_warmup, vit_warmup = warmup
    if not is_backbone:
        if non_vit_warmup > 0 and step < non_vit_warmup:
            return base_lr * (step / non_vit_warmup)
        return base_lr * (1 - max(0, step - non_vit_warmup) / max(1, total_steps - non_vit_warmup)) ** power
    if step < non_vit_warmup:
        return 0.0
    if step < non_vit_warmup + vit_warmup:
        return base_lr * ((step - non_vit_warmup) / vit_warmup)
    return base_lr * (1 - max(0, step - non_vit_warmup - vit_warmup) / max(1, total_steps - non_vit_warmup - vit_warmup)) ** power


def test_schedule_equals_the_authors_formula_at_key_steps():
    total = 4000
    head, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW(
        [{"params": [head], "lr": 1e-4, "is_backbone": False}, {"params": [backbone], "lr": 3e-5, "is_backbone": True}]
    )
    scheduler = two_stage_warmup_poly_schedule(optimizer, total_steps=total)
    key_steps = {0, 1, 250, 499, 500, 501, 1000, 1499, 1500, 1501, 2750, 3999, 4000}
    for step in range(total + 1):
        if step in key_steps:
            head_lr, backbone_lr = (group["lr"] for group in optimizer.param_groups)
            assert head_lr == pytest.approx(authors_lr(step, 1e-4, False, total), abs=1e-15), step
            assert backbone_lr == pytest.approx(authors_lr(step, 3e-5, True, total), abs=1e-15), step
        optimizer.step()
        scheduler.step()
    assert two_stage_warmup_poly_factor(500, total, is_backbone=True) == 0.0  # the backbone starts at 0 ...
    assert two_stage_warmup_poly_factor(1500, total, is_backbone=True) == 1.0  # ... and peaks after its warm-up
    assert two_stage_warmup_poly_factor(500, total, is_backbone=False) == 1.0
    assert two_stage_warmup_poly_factor(total + 10, total, is_backbone=False) == 0.0  # past the end: 0, not complex


def test_schedule_resumes_from_its_state_dict():
    def build():
        parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
        optimizer = torch.optim.SGD([{"params": [parameters[0]], "lr": 0.1}, {"params": [parameters[1]], "lr": 0.05, "is_backbone": True}])
        return optimizer, two_stage_warmup_poly_schedule(optimizer, total_steps=100, head_warmup_steps=5, backbone_warmup_steps=10)

    optimizer, scheduler = build()
    for _ in range(12):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    continued = []
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        continued.append([group["lr"] for group in optimizer.param_groups])

    optimizer, scheduler = build()
    scheduler.load_state_dict(state)
    resumed = []
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        resumed.append([group["lr"] for group in optimizer.param_groups])
    assert resumed == continued
    assert 0 < continued[0][1] < 0.05  # mid backbone warm-up
