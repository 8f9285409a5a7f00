"""Two-way rename tables between a checkpoint format's keys and this package's (canonical) state-dict keys.

A table is a list of rows `(theirs, ours)` of key templates with the fields `{i}` (transformer block), `{j}` (upscale
block) and `{p}` (`weight` and `bias`), like the `MAPPINGS` of transformers' `convert_eomt_to_hf.py`; the same rows
convert in both directions. A row whose `theirs` names several tensors concatenates them along the first dimension
into ours (separate q/k/v projections into `qkv`, a gated FFN's gate and up projections into `fc1`) and splits ours
back into equal parts. A row whose `ours` is None names a key bias this package does not store (`key_bias=False`):
read, it must be zero and is dropped; written, it is left out.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Row = tuple[str | tuple[str, ...], str | None]

_FIELD_VALUES = {"p": ("weight", "bias")}  # `{i}` and `{j}` range over the table's block counts


def map_rows(rows: Iterable[Row], theirs: Callable[[str], str], ours: Callable[[str], str] = str) -> list[Row]:
    """`rows` with every key template on their side passed through `theirs` (and on ours through `ours`)."""
    return [
        (theirs(keys) if isinstance(keys, str) else tuple(map(theirs, keys)), key if key is None else ours(key))
        for keys, key in rows
    ]


def key_problems(missing: Iterable[str], unexpected: Iterable[str]) -> list[str]:
    """`missing keys [...]` and `unexpected keys [...]`, for those that are not empty: the wording of every strict
    check."""
    named = (("missing keys", sorted(missing)), ("unexpected keys", sorted(unexpected)))
    return [f"{what} {keys}" for what, keys in named if keys]


@dataclass
class Renamed:
    """The renamed tensors, and the source keys that the table expected but did not find or does not know."""

    state: dict[str, Tensor]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def check(self, description: str) -> dict[str, Tensor]:
        """The renamed tensors; a `ValueError` starting with `description` names any missing or unexpected key."""
        problems = key_problems(self.missing, self.unexpected)
        if problems:
            raise ValueError(f"{description}: " + "; ".join(problems))
        return self.state


class RenameTable:
    """The rows of one checkpoint format, expanded for `num_layers` transformer blocks and `num_upscale_blocks`."""

    def __init__(self, rows: Iterable[Row], num_layers: int, num_upscale_blocks: int = 0) -> None:
        values = {**_FIELD_VALUES, "i": range(num_layers), "j": range(num_upscale_blocks)}
        self.pairs: list[tuple[tuple[str, ...], str | None]] = []
        for theirs, ours in rows:
            theirs = (theirs,) if isinstance(theirs, str) else tuple(theirs)
            templates = (*theirs, ours or "")
            names = sorted({name for text in templates for _, name, _, _ in string.Formatter().parse(text) if name})
            for combination in itertools.product(*(values[name] for name in names)):
                fields = dict(zip(names, combination))
                self.pairs.append((tuple(key.format(**fields) for key in theirs), ours and ours.format(**fields)))

    def to_ours(self, state: dict[str, Tensor]) -> Renamed:
        """Our tensors from a state dict in this format (a zero key bias is dropped, a non-zero one refused)."""
        state, out, missing = dict(state), {}, []
        for theirs, ours in self.pairs:
            if ours is None:
                bias = state.pop(theirs[0], None)
                if bias is not None and bias.abs().max() > 0:
                    raise ValueError(f"{theirs[0]} is non-zero but the config has key_bias=False")
                continue
            missing.extend(key for key in theirs if key not in state)
            parts = [state.pop(key) for key in theirs if key in state]
            if len(parts) == len(theirs):
                out[ours] = parts[0] if len(parts) == 1 else torch.cat(parts)
        return Renamed(out, missing, sorted(state))

    def to_theirs(self, state: dict[str, Tensor]) -> Renamed:
        """A state dict in this format from ours."""
        state, out, missing = dict(state), {}, []
        for theirs, ours in self.pairs:
            if ours is None:
                continue
            if ours not in state:
                missing.append(ours)
                continue
            out.update(zip(theirs, state.pop(ours).chunk(len(theirs))))
        return Renamed(out, missing, sorted(state))
