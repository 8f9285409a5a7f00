"""Tiny models and data shared by the training tests."""

from __future__ import annotations

import socket

import pytest
import torch
from torch.utils.data import Dataset

from modeling_eomt import EoMTForUniversalSegmentation
from tests.modeling.helpers import perturb_, tiny_config

IMAGE_SIZE = 32  # 2x2 patches, 8x8 mask logits: the smallest input that exercises everything


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: tiny models run several times faster than with 2 threads on a shared machine
    (no threads spinning while they wait for a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_segmentation_model(seed: int = 0, variant: str = "dinov2-registers-swiglu", **overrides) -> EoMTForUniversalSegmentation:
    """A perturbed tiny EoMT (3 layers, 2 masked blocks, 5 queries, 4 classes), identical for the same seed."""
    torch.manual_seed(seed)
    return perturb_(EoMTForUniversalSegmentation(tiny_config(variant, **overrides)))


def tiny_inference_model(variant: str = "dinov2-registers-swiglu", **overrides) -> EoMTForUniversalSegmentation:
    """A tiny EoMT (8 queries, weights perturbed by 0.5) in eval mode without masked attention, as after annealing:
    what `eomt predict` gets."""
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant, num_queries=8, **overrides)), scale=0.5).eval()
    model.set_attn_mask_probs(0.0)  # mask-free inference, as after annealing
    return model


def free_port() -> int:
    """A free TCP port on this machine, for `accelerate launch --main_process_port`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_targets(sizes: list[int], height: int, width: int, num_labels: int = 4, seed: int = 0):
    """`mask_labels` (bool `(n_i, H, W)` rectangles) and `class_labels` for images with `sizes[i]` targets."""
    generator = torch.Generator().manual_seed(seed)
    mask_labels, class_labels = [], []
    for count in sizes:
        masks = torch.zeros(count, height, width, dtype=torch.bool)
        for index in range(count):
            y0, x0 = torch.randint(0, height // 2, (2,), generator=generator).tolist()
            y1 = y0 + int(torch.randint(2, height // 2 + 1, (1,), generator=generator))
            x1 = x0 + int(torch.randint(2, width // 2 + 1, (1,), generator=generator))
            masks[index, y0:y1, x0:x1] = True
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, num_labels, (count,), generator=generator))
    return mask_labels, class_labels


class SegmentationExamples(Dataset):
    """`count` fixed examples: noise images with `num_masks` rectangle targets whose pixels are brightened."""

    def __init__(self, count: int = 4, num_masks: int = 2, size: int = IMAGE_SIZE, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        mask_labels, class_labels = random_targets([num_masks] * count, size, size, seed=seed)
        self.examples = []
        for masks, classes in zip(mask_labels, class_labels):
            pixels = torch.randn(3, size, size, generator=generator) * 0.5
            for mask, label in zip(masks, classes):
                pixels[int(label) % 3, mask] += 2.0
            self.examples.append({"pixel_values": pixels, "mask_labels": masks, "class_labels": classes})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]
