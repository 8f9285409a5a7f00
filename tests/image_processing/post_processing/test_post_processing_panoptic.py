"""Panoptic post-processing (image_processing.post_processing.panoptic): parity with transformers on the same outputs,
both ways of deciding pixels (whole blocks, pixel by pixel), stuff fusion and empty results."""

import pytest
import torch

from image_processing.post_processing import panoptic, post_process_panoptic
from image_processing.post_processing.panoptic import _float32_above
from tests.image_processing.post_processing.helpers import CLASSES, INPUT, TARGETS, outputs_for, padded_processor, realistic, valid_sizes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_equals_transformers(seed, monkeypatch):
    exact_fractions = []  # pixels decided one by one (the others are settled per block)
    pixels = panoptic._BlockGrid.pixels

    def recording_pixels(grid, blocks):
        chosen = pixels(grid, blocks)
        exact_fractions.append(chosen.numel() / (grid.height * grid.width))
        return chosen

    monkeypatch.setattr(panoptic._BlockGrid, "pixels", recording_pixels)
    # repeated classes, so that stuff fusion happens; a third, downscaled image
    class_logits, mask_logits = realistic(batch=3, seed=seed, class_pool=range(4))
    stuff, targets = [0, 1, 2], TARGETS + [(90, 61)]
    ours = post_process_panoptic(
        class_logits, mask_logits, targets, input_size=(INPUT, INPUT), valid_sizes=valid_sizes(targets), stuff_classes=stuff
    )
    theirs = padded_processor().post_process_panoptic_segmentation(outputs_for(class_logits, mask_logits), targets, stuff_classes=stuff)
    assert sum(len(result["segments_info"]) for result in ours) >= 4
    for mine, reference in zip(ours, theirs):
        assert mine["segments_info"] == reference["segments_info"] and mine["segments_info"]
        assert mine["segmentation"].dtype == torch.long
        assert torch.equal(mine["segmentation"], reference["segmentation"].long())
        labels = [segment["label_id"] for segment in mine["segments_info"]]
        assert all(labels.count(label) <= 1 for label in stuff)  # one segment per stuff class
    unfused = post_process_panoptic(class_logits, mask_logits, targets, valid_sizes=valid_sizes(targets))
    assert sum(len(r["segments_info"]) for r in unfused) > sum(len(r["segments_info"]) for r in ours)  # fusion merged some
    assert all(0.0 < fraction < 0.9 for fraction in exact_fractions)  # both paths ran


def test_panoptic_overlapping_queries_equal_transformers():
    # pairs of confident queries compete for the same pixels with nearly equal score x probability: the winner
    # changes from pixel to pixel, so those blocks must be decided pixel by pixel
    class_logits, mask_logits = realistic(batch=2, seed=15)
    for b in range(2):
        confident = (class_logits[b].softmax(-1).amax(-1) > 0.9) & (class_logits[b].argmax(-1) < CLASSES)
        first, second, third, fourth = confident.nonzero()[:4, 0].tolist()
        for strong, weak in ((first, second), (third, fourth)):
            mask_logits[b, weak] = mask_logits[b, strong] + 0.3 + 0.3 * torch.randn(INPUT // 4, INPUT // 4)
            class_logits[b, weak] = class_logits[b, strong] - 0.05
    ours = post_process_panoptic(class_logits, mask_logits, TARGETS, input_size=(INPUT, INPUT), valid_sizes=valid_sizes(TARGETS))
    theirs = padded_processor().post_process_panoptic_segmentation(outputs_for(class_logits, mask_logits), TARGETS)
    for mine, reference in zip(ours, theirs):
        assert mine["segments_info"] == reference["segments_info"]
        assert torch.equal(mine["segmentation"], reference["segmentation"].long())


def test_panoptic_label_ids_to_fuse_is_stuff_classes():
    class_logits, mask_logits = realistic(seed=3, class_pool=range(4))
    kwargs = {"input_size": (INPUT, INPUT), "valid_sizes": valid_sizes(TARGETS)}
    by_stuff = post_process_panoptic(class_logits, mask_logits, TARGETS, stuff_classes=[1, 3], **kwargs)
    by_fuse = post_process_panoptic(class_logits, mask_logits, TARGETS, label_ids_to_fuse=[3, 1], **kwargs)
    for a, b in zip(by_stuff, by_fuse):
        assert a["segments_info"] == b["segments_info"] and torch.equal(a["segmentation"], b["segmentation"])
    with pytest.raises(ValueError, match="disagree"):
        post_process_panoptic(class_logits, mask_logits, TARGETS, stuff_classes=[1], label_ids_to_fuse=[2], **kwargs)


def test_float32_comparison_equals_pythons():
    ratios = torch.cat([torch.rand(10000), torch.tensor([0.8, 0.5, 0.3, 4 / 5, 1.0])]).float()
    for threshold in [0.8, 0.5, 0.3, 0.0, 0.123456789]:
        expected = torch.tensor([float(ratio) > threshold for ratio in ratios])
        assert torch.equal(ratios >= _float32_above(threshold), expected)


def test_panoptic_without_confident_queries_is_empty():
    class_logits, mask_logits = realistic(batch=2, seed=10)
    class_logits[..., -1] = 50.0  # everything is "no object"
    for result in post_process_panoptic(class_logits, mask_logits, TARGETS, valid_sizes=valid_sizes(TARGETS)):
        assert result["segments_info"] == [] and result["segmentation"].dtype == torch.long
        assert (result["segmentation"] == -1).all()
