"""The busy-scene outputs of benchmarks.realistic_outputs: deterministic, shaped as asked, confident blob-shaped
queries that overlap, unsure queries that keep some class probability, and the benchmark cases built on them."""

import pytest
import torch

from benchmarks.realistic_outputs import realistic_outputs
from benchmarks.sections.post_processing import _realistic_cases


def test_same_seed_same_outputs_and_shapes():
    first = realistic_outputs(2, num_queries=50, num_classes=17, mask_size=(40, 30), num_confident=12, seed=3)
    again = realistic_outputs(2, num_queries=50, num_classes=17, mask_size=(40, 30), num_confident=12, seed=3)
    other = realistic_outputs(2, num_queries=50, num_classes=17, mask_size=(40, 30), num_confident=12, seed=4)
    assert first[0].shape == (2, 50, 18) and first[1].shape == (2, 50, 40, 30)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_confident_blobs_overlap_and_the_rest_is_unsure():
    class_logits, mask_logits = realistic_outputs(2, num_queries=120, mask_size=(64, 64), num_confident=25, seed=0)
    probs = class_logits.softmax(-1)  # 133 classes + "no object"
    best = probs[..., :-1].amax(-1)  # (B, Q)
    confident = best > 0.2
    assert (confident.sum(1) == 25).all()
    unsure = best[~confident]
    assert (unsure > 0.002).float().mean() > 0.9  # a few percent, not ~0 as with a well-trained model
    assert (probs[..., -1][~confident] < 0.9).float().mean() > 0.5  # "no object" is not near-certain
    for b in range(2):
        blobs = mask_logits[b, confident[b]] > 0  # (25, h, w)
        areas = blobs.flatten(1).float().mean(1)
        assert ((areas > 0.002) & (areas < 0.25)).all()  # each a blob, not the whole image
        covered = blobs.sum(0)
        assert (covered >= 2).any() and (covered == 1).float().mean() > 0.3  # some overlap, mostly single


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="mask size"):
        realistic_outputs(1, mask_size=(1, 40))


def test_cases_compare_like_with_like():
    cases = list(_realistic_cases(1, num_queries=30, input_size=64, seed=1))
    assert [task for task, _, _ in cases] == ["panoptic", "instance", "semantic"]
    ours, theirs = cases[2][1](), cases[2][2]()
    assert torch.equal(ours[0], theirs[0].long())
