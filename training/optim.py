"""The optimizer recipe of EoMT: layer-wise learning-rate decay and the two-stage warm-up + polynomial schedule.

Facts from the authors' `configure_optimizers` and `TwoStageWarmupPolySchedule`:
- the backbone is the ViT: patch / position embeddings, class and register tokens, the blocks and the final norm;
  everything else (queries, class head, mask head, upscale blocks) is new;
- backbone block `i` of `L` gets `lr * layer_decay ** (L - 1 - i)`, the embeddings and tokens block 0's lr, the final
  norm and the new parameters the full lr;
- AdamW's weight decay applies to every parameter (`exclude_from_weight_decay=True` gives the timm / detectron2
  convention instead);
- the new parameters warm up linearly over `head_warmup_steps` while the backbone lr is 0, the backbone (final norm
  included) then warms up over `backbone_warmup_steps`; each part then decays as `(1 - progress) ** power` to the
  end of training.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# Parameters that `exclude_from_weight_decay=True` leaves undecayed: biases, LayerScale, tokens, position embeddings
# (LayerNorm weights are found by module type).
_NO_DECAY_NAME = re.compile(r"(bias|lambda1|cls_token|register_tokens|position_embeddings|query\.weight)$")


def _encoder(model: nn.Module) -> nn.Module:
    """The `EoMTModel` of an `EoMTForUniversalSegmentation` (or the model itself)."""
    encoder = getattr(model, "eomt", model)
    if not (hasattr(encoder, "embeddings") and hasattr(encoder, "layers") and hasattr(encoder, "layernorm")):
        raise ValueError(f"{type(model).__name__} is not an EoMT model (expected `embeddings`, `layers` and `layernorm`)")
    return encoder


def layer_decay_parameter_groups(
    model: nn.Module,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.05,
    layer_decay: float = 0.8,
    exclude_from_weight_decay: bool = False,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay for an EoMT model.

    Each group has `params`, `lr`, `weight_decay`, `name` (`"head"`, `"backbone.norm"`, `"backbone.block{i}"`,
    `"backbone.embeddings"`, with a `".no_decay"` suffix for undecayed parameters) and `is_backbone` (which warm-up
    stage it follows). The head group comes first (it is the lr `Trainer` logs as `learning_rate`). Frozen parameters
    are left out.
    """
    encoder = _encoder(model)
    num_layers = len(encoder.layers)
    no_decay_ids = set()
    if exclude_from_weight_decay:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                no_decay_ids.update(id(parameter) for parameter in module.parameters(recurse=False))
        no_decay_ids.update(id(p) for name, p in model.named_parameters() if _NO_DECAY_NAME.search(name))

    # (group name, lr scale) of every backbone parameter; everything else is "head" with the full lr.
    backbone: dict[int, tuple[str, float]] = {}
    for parameter in encoder.embeddings.parameters():
        backbone[id(parameter)] = ("backbone.embeddings", layer_decay ** (num_layers - 1))
    for index, layer in enumerate(encoder.layers):
        for parameter in layer.parameters():
            backbone[id(parameter)] = (f"backbone.block{index}", layer_decay ** (num_layers - 1 - index))
    for parameter in encoder.layernorm.parameters():
        backbone[id(parameter)] = ("backbone.norm", 1.0)

    groups: dict[str, dict[str, Any]] = {}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        is_backbone = id(parameter) in backbone
        name, scale = backbone.get(id(parameter), ("head", 1.0))
        decay = 0.0 if id(parameter) in no_decay_ids else weight_decay
        key = name if decay == weight_decay else f"{name}.no_decay"
        if key not in groups:
            groups[key] = {"params": [], "lr": learning_rate * scale, "weight_decay": decay, "name": key, "is_backbone": is_backbone}
        groups[key]["params"].append(parameter)

    def order(group: dict[str, Any]) -> tuple[int, int]:
        # head, final norm, last block ... first block, embeddings
        name = group["name"].removesuffix(".no_decay")
        rank = {"head": -2, "backbone.norm": -1, "backbone.embeddings": num_layers}.get(name)
        if rank is None:
            rank = num_layers - 1 - int(name.removeprefix("backbone.block"))
        return rank, group["weight_decay"] == 0.0

    return sorted(groups.values(), key=order)


def two_stage_warmup_poly_factor(
    step: int,
    total_steps: int,
    is_backbone: bool,
    head_warmup_steps: int = 500,
    backbone_warmup_steps: int = 1000,
    power: float = 0.9,
) -> float:
    """The lr multiplier of optimizer step `step` (0-based): for the new parameters `step / head_warmup_steps` during
    their warm-up, then `(1 - (step - head_warmup) / (total - head_warmup)) ** power`; for the backbone 0 during the
    head warm-up, a linear warm-up over the next `backbone_warmup_steps`, then the same decay from its end."""
    if is_backbone:
        if step < head_warmup_steps:
            return 0.0
        if step < head_warmup_steps + backbone_warmup_steps:
            return (step - head_warmup_steps) / backbone_warmup_steps
        decay_start = head_warmup_steps + backbone_warmup_steps
    else:
        if step < head_warmup_steps:
            return step / head_warmup_steps
        decay_start = head_warmup_steps
    progress = (step - decay_start) / max(1, total_steps - decay_start)
    return max(0.0, 1.0 - progress) ** power


def two_stage_warmup_poly_schedule(
    optimizer: Optimizer,
    total_steps: int,
    head_warmup_steps: int = 500,
    backbone_warmup_steps: int = 1000,
    power: float = 0.9,
) -> LambdaLR:
    """`LambdaLR` with one `two_stage_warmup_poly_factor` per group, chosen by the group's `is_backbone` key (groups
    without it count as new parameters). Resumable through its `state_dict`."""
    if min(head_warmup_steps, backbone_warmup_steps, total_steps) < 0:
        raise ValueError(
            f"warm-up and total steps must be >= 0, got head {head_warmup_steps}, backbone {backbone_warmup_steps}, "
            f"total {total_steps}"
        )
    factors = [
        partial(
            two_stage_warmup_poly_factor,
            total_steps=total_steps,
            is_backbone=bool(group.get("is_backbone", False)),
            head_warmup_steps=head_warmup_steps,
            backbone_warmup_steps=backbone_warmup_steps,
            power=power,
        )
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, factors)
