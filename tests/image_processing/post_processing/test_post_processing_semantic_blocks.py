"""Semantic segmentation on busy outputs (image_processing.post_processing.semantic and semantic_blocks): the block
bounds hold, the per-block exact mask probabilities equal the full computation, each level of the decision is used,
and the map is the argmax of a direct full-resolution computation for every geometry (resize, padding, windows)."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.inputs import synthetic_outputs
from benchmarks.realistic_outputs import realistic_outputs
from image_processing.post_processing import post_process_semantic, semantic
from image_processing.post_processing.geometry import _merged_scores, _semantic_layout
from image_processing.post_processing.semantic_blocks import _image_blocks

INPUT, MASK = 96, 24  # model input side and mask logits side
QUERIES, CLASSES = 40, 12


def busy(batch=1, seed=0, mask_size=(MASK, MASK)):
    return realistic_outputs(batch, QUERIES, CLASSES, mask_size, num_confident=10, seed=seed)


def direct_scores(class_logits, mask_logits, target, valid=(INPUT, INPUT)):
    """Class scores `(K, H, W)` computed the plain way: every query's logits upsampled to the input, cropped to
    `valid`, through sigmoid, weighted by the class probabilities, resized to `target`."""
    probs = class_logits.softmax(-1)[:, :-1]
    upsampled = F.interpolate(mask_logits[None], size=(INPUT, INPUT), mode="bilinear", align_corners=False)[0]
    scores = torch.einsum("qk,qhw->khw", probs, upsampled[:, : valid[0], : valid[1]].sigmoid())
    return F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]


def assert_argmax(segmentation, scores):
    """The map is the argmax of the scores, except where the two best classes tie within float32 rounding."""
    top2 = scores.topk(2, dim=0).values
    differs = segmentation != scores.argmax(0)
    assert not (differs & (top2[0] - top2[1] >= 1e-5)).any()
    assert differs.float().mean() < 1e-3


def window_outputs(seed):
    """Two 96-pixel windows over a 96 x 128 resized image whose logits agree where they overlap (cut from one set
    of busy outputs), with transformers' offsets."""
    class_logits, mask_logits = busy(seed=seed, mask_size=(MASK, 32))
    windows = torch.stack([mask_logits[0, :, :, :MASK], mask_logits[0, :, :, 32 - MASK :]])
    return class_logits.expand(2, -1, -1), windows, [(0, 0, 96), (0, 32, 128)]


def views_of(image, class_logits, mask_logits):
    outputs = [view.output for view in image.views]
    return class_logits.softmax(-1)[outputs, :, :-1], mask_logits[outputs]


def exact_scores(image, class_logits, mask_logits):
    probs, logits = views_of(image, class_logits, mask_logits)
    return _merged_scores(image, list(probs), list(logits), (INPUT, INPUT))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "target, valid",
    [((INPUT, INPUT), (INPUT, INPUT)), ((150, 130), (INPUT, INPUT)), ((70, 50), (INPUT, INPUT)), ((100, 133), (72, INPUT))],
)
def test_busy_outputs_give_the_direct_argmax(seed, target, valid):
    class_logits, mask_logits = busy(seed=seed)
    ours = post_process_semantic(class_logits, mask_logits, [target], input_size=(INPUT, INPUT), valid_sizes=[valid])[0]
    assert ours.shape == target and len(ours.unique()) >= 5
    assert_argmax(ours, direct_scores(class_logits[0], mask_logits[0], target, valid))


@pytest.mark.parametrize("target", [(96, 128), (120, 160), (72, 96)])
def test_busy_windows_give_the_exact_argmax(target):
    class_logits, mask_logits, offsets = window_outputs(seed=3)
    ours = post_process_semantic(class_logits, mask_logits, [target], input_size=(INPUT, INPUT), patch_offsets=offsets, resized_sizes=[(96, 128)])
    image = _semantic_layout(2, [target], (INPUT, INPUT), None, offsets, [(96, 128)])[0]
    assert_argmax(ours[0], exact_scores(image, class_logits, mask_logits))


def geometries():
    single = _semantic_layout(1, [(70, 130)], (INPUT, INPUT), [(72, INPUT)], None, None)[0]
    identity = _semantic_layout(1, [(INPUT, INPUT)], (INPUT, INPUT), None, None, None)[0]
    class_logits, mask_logits, offsets = window_outputs(seed=4)
    windows = _semantic_layout(2, [(120, 150)], (INPUT, INPUT), None, offsets, [(96, 128)])[0]
    one_class_logits, one_mask_logits = busy(seed=4)
    return [(identity, one_class_logits, one_mask_logits), (single, one_class_logits, one_mask_logits), (windows, class_logits, mask_logits)]


@pytest.mark.parametrize("case", range(3))
def test_block_bounds_hold(case):
    image, class_logits, mask_logits = geometries()[case]
    probs, logits = views_of(image, class_logits, mask_logits)
    blocks = _image_blocks(image, (INPUT, INPUT), (logits.shape[-2], logits.shape[-1]), logits.device)
    bounds = semantic._block_bounds(logits, probs, blocks.rows, blocks.cols, image.axis, None)
    low, high = bounds.scores(torch.arange(blocks.block_pixels.shape[0]))  # (NB, K)
    scores = exact_scores(image, class_logits, mask_logits).flatten(1)  # (K, H * W)
    block = blocks.block_index.flatten()
    assert (scores >= low[block].T - 1e-5).all() and (scores <= high[block].T + 1e-5).all()
    assert ((high - low) < 0.1 * high.max()).float().mean() > 0.5  # not vacuous: most are narrow


@pytest.mark.parametrize("case", range(3))
def test_block_mask_probabilities_are_exact(case):
    image, class_logits, mask_logits = geometries()[case]
    probs, logits = views_of(image, class_logits, mask_logits)
    num_views, num_queries = logits.shape[:2]
    blocks = _image_blocks(image, (INPUT, INPUT), (logits.shape[-2], logits.shape[-1]), logits.device)
    # the full computation of every query's mask probability at the target: one-hot class probabilities per query
    one_hot = torch.zeros(num_views, num_queries, num_views * num_queries)
    for v in range(num_views):
        one_hot[v, :, v * num_queries : (v + 1) * num_queries] = torch.eye(num_queries)
    full = _merged_scores(image, list(one_hot), list(logits), (INPUT, INPUT))  # (V * Q, H, W)
    generator = torch.Generator().manual_seed(case)
    chosen = torch.randperm(blocks.block_pixels.shape[0], generator=generator)[:200]
    active = torch.randint(0, num_views * num_queries, (chosen.numel(), 5), generator=generator)
    num_cols = blocks.cols.starts.numel()
    mask_probs = semantic._block_mask_probs(logits, active, chosen // num_cols, chosen % num_cols, blocks.rows, blocks.cols, image.axis)
    pixels = blocks.block_pixels[chosen]  # (N, px)
    inside = pixels >= 0
    expected = full.flatten(1)[active[:, :, None], pixels.clamp(min=0)[:, None, :]]  # (N, A, px)
    torch.testing.assert_close(mask_probs[inside[:, None, :].expand_as(mask_probs)], expected[inside[:, None, :].expand_as(expected)], atol=1e-6, rtol=1e-5)


def counting(monkeypatch):
    """Records, per call, the open blocks, the pixels decided pixel by pixel and the pixels repaired exactly."""
    counts = {"open blocks": 0, "decided pixels": 0, "repaired pixels": 0, "left out": []}
    decide, repair, bounds = semantic._decide_pixels, semantic._scores_at_pixels, semantic._block_bounds

    def recording_decide(*args):
        pixels, classes, open_pixels = decide(*args)
        counts["open blocks"] += args[6].numel()
        counts["decided pixels"] += pixels.numel()
        return pixels, classes, open_pixels

    def recording_repair(image, probs, logits, input_size, pixels):
        counts["repaired pixels"] += pixels.shape[0]
        return repair(image, probs, logits, input_size, pixels)

    def recording_bounds(*args):
        counts["left out"].append(args[-1] is not None)
        return bounds(*args)

    monkeypatch.setattr(semantic, "_decide_pixels", recording_decide)
    monkeypatch.setattr(semantic, "_scores_at_pixels", recording_repair)
    monkeypatch.setattr(semantic, "_block_bounds", recording_bounds)
    return counts


def test_busy_outputs_use_every_level(monkeypatch):
    counts = counting(monkeypatch)
    class_logits, mask_logits = realistic_outputs(1, 100, 40, (48, 48), num_confident=20, seed=5)
    ours = post_process_semantic(class_logits, mask_logits, [(192, 192)])[0]
    full = post_process_semantic(class_logits, mask_logits, [(192, 192)], return_scores=True)[0]
    pixels = ours.numel()
    assert 0 < counts["open blocks"] * 16 < pixels / 2  # most blocks settled from their bounds
    assert counts["decided pixels"] > counts["repaired pixels"] > 0  # most open pixels decided without the repair
    assert counts["left out"] == [False]  # unsure queries keep too much class probability to be left out
    assert_argmax(ours, full["segmentation_scores"])


def test_trained_looking_outputs_leave_unsure_queries_out(monkeypatch):
    counts = counting(monkeypatch)
    class_logits, mask_logits = synthetic_outputs(1, 60, 20, (48, 48), (4, 12), seed=6)
    ours = post_process_semantic(class_logits, mask_logits, [(150, 200)])[0]
    full = post_process_semantic(class_logits, mask_logits, [(150, 200)], return_scores=True)[0]
    assert counts["left out"] == [True]
    assert_argmax(ours, full["segmentation_scores"])


def test_non_finite_logits_take_the_full_computation(monkeypatch):
    counts = counting(monkeypatch)
    class_logits, mask_logits = busy(seed=7)
    mask_logits[0, 3, 5, 5] = float("inf")
    ours = post_process_semantic(class_logits, mask_logits, [(INPUT, INPUT)])[0]
    full = post_process_semantic(class_logits, mask_logits, [(INPUT, INPUT)], return_scores=True)[0]
    assert counts["left out"] == [] and torch.equal(ours, full["segmentation"])
