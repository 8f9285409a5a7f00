"""Semantic post-processing (image_processing.post_processing.semantic): parity with transformers with and without
sliding windows, the first pass and its exact repair, padding removal and the plain-map wrapper."""

import pytest
import torch
import torch.nn.functional as F
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil

from benchmarks.inputs import synthetic_window_outputs
from image_processing.post_processing import post_process_semantic, semantic, semantic_probabilities, semantic_segmentation
from tests.image_processing.post_processing.helpers import CLASSES, INPUT, QUERIES, outputs_for, realistic


def test_semantic_windows_equal_transformers():
    targets = [(150, 200), (230, 192)]
    resized = [get_size_with_aspect_ratio(target, INPUT, None) for target in targets]
    class_logits, mask_logits, offsets = synthetic_window_outputs(resized, INPUT, QUERIES, CLASSES, seed=5)
    assert len(offsets) == 4  # two windows per image
    processor = EomtImageProcessorPil(size={"shortest_edge": INPUT, "longest_edge": None})
    outputs = outputs_for(class_logits, mask_logits, [torch.tensor(offset) for offset in offsets])
    theirs = processor.post_process_semantic_segmentation(outputs, targets, return_segmentation_scores=True)
    ours = post_process_semantic(class_logits, mask_logits, targets, input_size=(INPUT, INPUT), patch_offsets=offsets, resized_sizes=resized)
    inferred = post_process_semantic(class_logits, mask_logits, targets, patch_offsets=offsets)  # sizes from the windows
    scored = post_process_semantic(
        class_logits, mask_logits, targets, input_size=(INPUT, INPUT), patch_offsets=offsets, return_scores=True
    )
    for mine, guessed, with_scores, reference in zip(ours, inferred, scored, theirs):
        assert mine.shape == reference.segmentation.shape and mine.dtype == torch.long
        assert torch.equal(mine, reference.segmentation) and torch.equal(guessed, mine)
        assert len(mine.unique()) >= 3
        torch.testing.assert_close(with_scores["segmentation_scores"], reference.segmentation_scores, atol=1e-6, rtol=1e-5)
        assert torch.equal(with_scores["segmentation"], mine)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_semantic_without_windows_equals_transformers(seed):
    class_logits, mask_logits = realistic(seed=seed)
    targets = [(100, 100), (300, 90)]  # square input, no padding: transformers resizes the whole input
    processor = EomtImageProcessorPil(size={"shortest_edge": INPUT, "longest_edge": INPUT})
    theirs = processor.post_process_semantic_segmentation(outputs_for(class_logits, mask_logits), targets, return_segmentation_scores=True)
    ours = post_process_semantic(class_logits, mask_logits, targets, input_size=(INPUT, INPUT))
    for mine, reference in zip(ours, theirs):
        top2 = reference.segmentation_scores.topk(2, dim=0).values
        near_tie = (top2[0] - top2[1]) < 1e-5
        differs = mine != reference.segmentation
        assert not (differs & ~near_tie).any()  # only float32 ties may break differently
        assert differs.float().mean() < 1e-3


def repaired_pixels(monkeypatch):
    """Records how many pixels each call of the point-wise repair recomputes."""
    counts = []
    repair = semantic._scores_at_pixels

    def recording_repair(image, probs, logits, input_size, pixels):
        counts.append(pixels.shape[0])
        return repair(image, probs, logits, input_size, pixels)

    monkeypatch.setattr(semantic, "_scores_at_pixels", recording_repair)
    return counts


def test_semantic_first_pass_and_repair_give_the_exact_argmax(monkeypatch):
    # a second class, as confident as the first, on a shifted copy of its mask: wherever both masks are on, the two
    # classes nearly tie, so the first pass leaves those pixels uncertain and the repair recomputes them
    repairs = repaired_pixels(monkeypatch)
    class_logits, mask_logits = realistic(batch=1, seed=6)
    first, second = (class_logits[0].softmax(-1)[:, :-1].amax(-1) > 0.5).nonzero()[:2, 0].tolist()
    mask_logits[0, second] = mask_logits[0, first].roll(2, dims=1)
    class_logits[0, second, :-1] = class_logits[0, first, :-1].roll(1)
    fast = post_process_semantic(class_logits, mask_logits, [(170, 120)])[0]
    full = post_process_semantic(class_logits, mask_logits, [(170, 120)], return_scores=True)[0]
    top2 = full["segmentation_scores"].topk(2, dim=0).values
    assert ((top2[0] - top2[1]) < 1e-2).sum() > 100  # close calls
    assert len(repairs) == 1 and repairs[0] > 100  # repaired, not computed in full
    assert torch.equal(fast, full["segmentation"])


def test_semantic_untrained_outputs_fall_back_to_full_computation(monkeypatch):
    repairs = repaired_pixels(monkeypatch)
    class_logits, mask_logits = torch.randn(2, QUERIES, CLASSES + 1), torch.randn(2, QUERIES, 12, 12)
    fast = post_process_semantic(class_logits, mask_logits, [(40, 50), (33, 20)])
    full = post_process_semantic(class_logits, mask_logits, [(40, 50), (33, 20)], return_scores=True)
    assert repairs == []  # no confident query: everything computed in full
    for a, b in zip(fast, full):
        assert torch.equal(a, b["segmentation"])


def test_semantic_segmentation_wrapper():
    class_logits, mask_logits = realistic(batch=2, seed=7)
    maps = semantic_segmentation(class_logits, mask_logits, (INPUT, INPUT))
    upsampled = F.interpolate(mask_logits, size=(INPUT, INPUT), mode="bilinear", align_corners=False)
    scores = semantic_probabilities(class_logits, upsampled)  # (B, K, H, W)
    assert maps.shape == (2, INPUT, INPUT) and (maps == scores.argmax(1)).float().mean() > 0.9999


def test_semantic_padding_is_removed():
    # a 144 x 192 image padded to 192 x 192: the padded rows must not reach the result (transformers keeps them)
    class_logits, mask_logits = realistic(batch=1, seed=9)
    mask_logits[0, :, 36:] = -20.0
    padded = post_process_semantic(class_logits, mask_logits, [(300, 400)], input_size=(INPUT, INPUT), valid_sizes=[(144, 192)])[0]
    cropped = post_process_semantic(class_logits, mask_logits[:, :, :36], [(300, 400)], input_size=(144, 192))[0]
    assert (padded == cropped).float().mean() > 0.999
