"""Which format a state dict is in, from telltale keys (the first rule that matches wins)."""

from __future__ import annotations

import re

from torch import Tensor

# (format, a pattern that some key of that format's state dicts matches and no other format's do)
TELLTALE_KEYS = (
    ("original", r"(_orig_mod\.)?network\."),  # the authors' Lightning module (possibly compiled)
    ("ours", r"(eomt\.)?layers\.\d+\.attention\.qkv\.weight"),  # EoMTForUniversalSegmentation / EoMTModel
    ("transformers", r"(model\.)?layers\.\d+\.attention\.q_proj\.weight"),  # Eomt(Dinov3)ForUniversalSegmentation
    ("dinov2", r"encoder\.layer\.\d+\."),  # Dinov2Model / Dinov2WithRegistersModel
    ("dinov3", r"(model\.)?layer\.\d+\."),  # DINOv3ViTModel
)
FORMAT_DESCRIPTIONS = {
    "original": "the authors' original EoMT checkpoint (`network.` keys)",
    "ours": "this package's EoMT",
    "transformers": "transformers' EoMT",
    "dinov2": "a transformers DINOv2 backbone",
    "dinov3": "a transformers DINOv3 backbone",
}


def detect_state_dict_format(state: dict[str, Tensor]) -> str | None:
    """`"original"`, `"ours"`, `"transformers"`, `"dinov2"` or `"dinov3"` (see `FORMAT_DESCRIPTIONS`), or None."""
    for name, pattern in TELLTALE_KEYS:
        if any(re.match(pattern, key) for key in state):
            return name
    return None
