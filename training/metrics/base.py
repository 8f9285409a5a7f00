"""What the streaming metrics share: input conversion and a state of fixed-size tensors that sums over images/ranks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .distributed import all_reduce_sum


def as_index_tensor(value: Any, name: str) -> Tensor:
    """`value` (tensor, array or nested list of integers) as an int64 tensor on its own device.

    Floating-point input is accepted when every value is a whole number (transformers' post-processing returns a
    float map when nothing was segmented); anything else raises a `ValueError` naming `name`.
    """
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{name} must hold integer ids, got dtype {tensor.dtype}")
    if tensor.is_floating_point():
        rounded = tensor.round()
        if not torch.equal(rounded, tensor):
            raise ValueError(f"{name} must hold integer ids, got non-integral values of dtype {tensor.dtype}")
        tensor = rounded
    return tensor.long()


def label_names(num_labels: int, id2label: Mapping[int, str] | None) -> list[str]:
    """Display name of every label id: `id2label[id]` where given, else the id as a string."""
    id2label = {int(key): value for key, value in (id2label or {}).items()}
    return [id2label.get(label, str(label)) for label in range(num_labels)]


class TensorStateMetric:
    """An accumulator whose whole state is a few fixed-size tensors that add up over images and processes.

    Subclasses name their state in `_state_names` and build it in `_empty_state`; `update` adds to it, `compute`
    reads `reduced_state()`, which sums it over all ranks when `torch.distributed` runs (call `compute` on every
    rank then).
    """

    _state_names: tuple[str, ...] = ()

    def _empty_state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every image seen so far."""
        for name, tensor in self._empty_state().items():
            setattr(self, name, tensor)

    def state_dict(self) -> dict[str, Tensor]:
        """The accumulated state (references, not copies)."""
        return {name: getattr(self, name) for name in self._state_names}

    def merge(self, other: TensorStateMetric) -> None:
        """Add the images `other` has seen to this accumulator (what summing over ranks does)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for name, tensor in self.state_dict().items():
            theirs = getattr(other, name)
            if theirs.shape != tensor.shape:
                raise ValueError(f"cannot merge {name} of shape {tuple(theirs.shape)} into {tuple(tensor.shape)}")
            tensor += theirs.to(tensor.device)

    def reduced_state(self) -> dict[str, Tensor]:
        """The state summed over all processes (a copy; the local state is left as it is)."""
        names = self._state_names
        return dict(zip(names, all_reduce_sum([getattr(self, name) for name in names])))
