"""Post-processing: parity with transformers' EoMT processor on the same outputs, our geometry where transformers'
is wrong, empty results, dtypes and bad input."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.models.eomt.image_processing_pil_eomt import EomtImageProcessorPil, compute_segments

from benchmarks.inputs import synthetic_outputs, synthetic_window_outputs
from image_processing import post_processing
from image_processing.post_processing import (
    _float32_above,
    _linear_taps,
    post_process_instance,
    post_process_panoptic,
    post_process_semantic,
    semantic_probabilities,
    semantic_segmentation,
    undo_padding_and_resize,
    upsample_and_crop,
)

INPUT = 192  # model input side; mask logits are 48 x 48
QUERIES, CLASSES = 60, 20
TARGETS = [(144, 192), (250, 170)]  # landscape (padded at the bottom) and portrait (padded at the right), upscaled


def outputs_for(class_logits, mask_logits, patch_offsets=None):
    return SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits, patch_offsets=patch_offsets)


def padded_processor():
    return EomtImageProcessorPil(size={"shortest_edge": INPUT, "longest_edge": INPUT}, do_pad=True)


def valid_sizes(targets):
    """The unpadded part of the square input, as transformers' longest-side resize computes it."""
    return [get_size_with_aspect_ratio(target, INPUT, INPUT) for target in targets]


def realistic(batch=2, seed=0, class_pool=None):
    return synthetic_outputs(batch, QUERIES, CLASSES, (INPUT // 4, INPUT // 4), (4, 12), class_pool=class_pool, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_equals_transformers(seed, monkeypatch):
    exact_fractions = []  # pixels decided one by one (the others are settled per block)
    pixels = post_processing._BlockGrid.pixels

    def recording_pixels(grid, blocks):
        chosen = pixels(grid, blocks)
        exact_fractions.append(chosen.numel() / (grid.height * grid.width))
        return chosen

    monkeypatch.setattr(post_processing._BlockGrid, "pixels", recording_pixels)
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


@pytest.mark.parametrize("seed", [0, 1])
def test_instance_equals_transformers(seed):
    class_logits, mask_logits = realistic(seed=seed)
    ours = post_process_instance(class_logits, mask_logits, TARGETS, input_size=(INPUT, INPUT), valid_sizes=valid_sizes(TARGETS))
    theirs = padded_processor().post_process_instance_segmentation(outputs_for(class_logits, mask_logits), TARGETS)
    for mine, reference in zip(ours, theirs):
        assert len(mine["segments_info"]) >= 2
        assert mine["segments_info"] == reference["segments_info"]
        assert torch.equal(mine["segmentation"], reference["segmentation"].long())


def test_instance_binary_maps_keep_overlaps():
    class_logits, mask_logits = realistic(batch=1, seed=4)
    first, second = (class_logits[0, :, :-1].softmax(-1).amax(-1) > 0.9).nonzero()[:2, 0].tolist()
    mask_logits[0, second] = mask_logits[0, first] + 1.0  # a second, larger instance over the first one
    kwargs = {"input_size": (INPUT, INPUT), "valid_sizes": valid_sizes(TARGETS[:1])}
    maps = post_process_instance(class_logits, mask_logits, TARGETS[:1], return_binary_maps=True, **kwargs)[0]
    flat = post_process_instance(class_logits, mask_logits, TARGETS[:1], **kwargs)[0]
    assert maps["segments_info"] == flat["segments_info"]
    binary = maps["segmentation"]
    assert binary.dtype == torch.bool and binary.shape == (len(flat["segments_info"]), *TARGETS[0])
    expected = undo_padding_and_resize(mask_logits[0], (INPUT, INPUT), valid_sizes(TARGETS[:1])[0], TARGETS[0]) > 0
    assert (expected[first] & expected[second]).any() and (binary.sum(0) > 1).any()  # the overlap survives
    last = torch.full(TARGETS[0], -1)  # in the map the later instance wins
    for index in range(binary.shape[0]):
        last[binary[index]] = index
    assert torch.equal(flat["segmentation"], last)


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
    repair = post_processing._scores_at_pixels

    def recording_repair(image, probs, logits, input_size, pixels):
        counts.append(pixels.shape[0])
        return repair(image, probs, logits, input_size, pixels)

    monkeypatch.setattr(post_processing, "_scores_at_pixels", recording_repair)
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


# --- geometry ------------------------------------------------------------------------------------------------------


def test_linear_taps_are_torchs():
    for out_size, in_size in [(640, 160), (1080, 360), (683, 640), (33, 160), (7, 3)]:
        index0, index1, weight0, weight1 = _linear_taps(out_size, in_size, torch.device("cpu"))
        weights = torch.zeros(in_size, out_size)
        weights[index0, torch.arange(out_size)] += weight0
        weights[index1, torch.arange(out_size)] += weight1
        impulses = torch.eye(in_size).view(1, in_size, 1, in_size)
        expected = F.interpolate(impulses, size=(1, out_size), mode="bilinear", align_corners=False)[0, :, 0]
        assert torch.equal(weights, expected)


@pytest.mark.parametrize("valid", [(2, 2), (2, 9), (6, 10), (37, 50)])
def test_upsample_and_crop_of_both_sides_is_within_rounding(valid):
    # aten's bilinear kernel may round differently for a small output; still the same values up to float32 rounding
    # (2-pixel crops once took aten's same-size shortcut and were off by several units)
    logits = torch.randn(5, 48, 48) * 4
    full = F.interpolate(logits[None], size=(INPUT, INPUT), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(upsample_and_crop(logits, (INPUT, INPUT), valid), full[:, : valid[0], : valid[1]], rtol=0, atol=1e-5)


def test_float32_comparison_equals_pythons():
    ratios = torch.cat([torch.rand(10000), torch.tensor([0.8, 0.5, 0.3, 4 / 5, 1.0])]).float()
    for threshold in [0.8, 0.5, 0.3, 0.0, 0.123456789]:
        expected = torch.tensor([float(ratio) > threshold for ratio in ratios])
        assert torch.equal(ratios >= _float32_above(threshold), expected)


@pytest.mark.parametrize("valid", [(192, 192), (144, 192), (192, 97), (1, 1), (191, 3), (2, 192), (192, 2), (1, 192)])
def test_upsample_and_crop_is_bit_identical_to_crop_after_upsampling(valid):
    logits = torch.randn(5, 48, 48) * 4
    full = F.interpolate(logits[None], size=(INPUT, INPUT), mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsample_and_crop(logits, (INPUT, INPUT), valid), full[:, : valid[0], : valid[1]])
    odd = torch.randn(3, 30, 40)  # 3.2x / 4.8x: no shortcut, same result
    full = F.interpolate(odd[None], size=(96, 192), mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsample_and_crop(odd, (96, 192), (50, 70)), full[:, :50, :70])


def test_non_square_input_without_padding():
    # do_pad=False: a 144 x 192 input (mask logits 36 x 48) for a 300 x 400 image. transformers would upsample the
    # masks to its square size and crop; we upsample to the real input and resize, and then decide as it does.
    class_logits, mask_logits = synthetic_outputs(1, QUERIES, CLASSES, (36, 48), (4, 10), seed=8)
    target = (300, 400)
    logits = F.interpolate(mask_logits, size=(144, 192), mode="bilinear", align_corners=False)
    logits = F.interpolate(logits, size=target, mode="bilinear", align_corners=False)[0]
    scores, labels = class_logits[0].softmax(-1).max(-1)
    keep = (labels != CLASSES) & (scores > 0.8)
    expected_map, expected_segments = compute_segments(logits[keep], scores[keep], labels[keep], None, target_size=target)
    ours = post_process_panoptic(class_logits, mask_logits, [target], input_size=(144, 192))[0]
    assert ours["segments_info"] == expected_segments and len(expected_segments) >= 2
    assert torch.equal(ours["segmentation"], expected_map)
    semantic = post_process_semantic(class_logits, mask_logits, [target], input_size=(144, 192))[0]
    scores_map = torch.einsum("qk,qhw->khw", class_logits[0].softmax(-1)[:, :-1], F.interpolate(
        mask_logits, size=(144, 192), mode="bilinear", align_corners=False)[0].sigmoid())
    expected = F.interpolate(scores_map[None], size=target, mode="bilinear", align_corners=False)[0].argmax(0)
    assert (semantic == expected).float().mean() > 0.9999


def test_semantic_padding_is_removed():
    # a 144 x 192 image padded to 192 x 192: the padded rows must not reach the result (transformers keeps them)
    class_logits, mask_logits = realistic(batch=1, seed=9)
    mask_logits[0, :, 36:] = -20.0
    padded = post_process_semantic(class_logits, mask_logits, [(300, 400)], input_size=(INPUT, INPUT), valid_sizes=[(144, 192)])[0]
    cropped = post_process_semantic(class_logits, mask_logits[:, :, :36], [(300, 400)], input_size=(144, 192))[0]
    assert (padded == cropped).float().mean() > 0.999


# --- empty results, dtypes, devices --------------------------------------------------------------------------------


def test_no_query_above_threshold_gives_empty_results():
    class_logits, mask_logits = realistic(batch=2, seed=10)
    class_logits[..., -1] = 50.0  # everything is "no object"
    for result in post_process_panoptic(class_logits, mask_logits, TARGETS, valid_sizes=valid_sizes(TARGETS)):
        assert result["segments_info"] == [] and result["segmentation"].dtype == torch.long
        assert (result["segmentation"] == -1).all()
    class_logits[..., -1] = 0.0
    class_logits[..., :-1] = 0.0  # uniform classes: no score reaches 0.8
    for target, result in zip(TARGETS, post_process_instance(class_logits, mask_logits, TARGETS)):
        assert result["segments_info"] == [] and result["segmentation"].shape == target
        assert (result["segmentation"] == -1).all()
    binary = post_process_instance(class_logits, mask_logits, TARGETS, return_binary_maps=True)[0]["segmentation"]
    assert binary.shape == (0, *TARGETS[0])


def test_bfloat16_logits():
    class_logits, mask_logits = realistic(batch=1, seed=11)
    low = class_logits.bfloat16(), mask_logits.bfloat16()
    as_float = low[0].float(), low[1].float()
    kwargs = {"input_size": (INPUT, INPUT), "valid_sizes": valid_sizes(TARGETS[:1])}
    ours = post_process_panoptic(*low, TARGETS[:1], **kwargs)[0]
    reference = post_process_panoptic(*as_float, TARGETS[:1], **kwargs)[0]
    assert ours["segments_info"] == reference["segments_info"] and len(ours["segments_info"]) >= 2
    assert torch.equal(ours["segmentation"], reference["segmentation"])
    semantic = post_process_semantic(*low, TARGETS[:1], return_scores=True)[0]
    assert semantic["segmentation_scores"].dtype == torch.float32
    assert torch.equal(semantic["segmentation"], post_process_semantic(*as_float, TARGETS[:1])[0])
    instances = post_process_instance(*low, TARGETS[:1], **kwargs)[0]
    assert instances["segments_info"] == post_process_instance(*as_float, TARGETS[:1], **kwargs)[0]["segments_info"]


def test_target_sizes_as_tensor():
    class_logits, mask_logits = realistic(batch=2, seed=12)
    kwargs = {"input_size": (INPUT, INPUT), "valid_sizes": torch.tensor(valid_sizes(TARGETS))}
    from_tensor = post_process_panoptic(class_logits, mask_logits, torch.tensor(TARGETS), **kwargs)
    from_list = post_process_panoptic(class_logits, mask_logits, TARGETS, **kwargs)
    for a, b in zip(from_tensor, from_list):
        assert torch.equal(a["segmentation"], b["segmentation"]) and a["segments_info"] == b["segments_info"]


# --- bad input -----------------------------------------------------------------------------------------------------


def test_bad_input_names_the_problem():
    class_logits, mask_logits = realistic(batch=2, seed=13)
    with pytest.raises(ValueError, match=r"target_sizes needs one \(height, width\) per image \(2\), got 1 entries"):
        post_process_panoptic(class_logits, mask_logits, TARGETS[:1])
    with pytest.raises(ValueError, match=r"target_sizes\[1\] must be two positive integers .* got \(0, 5\)"):
        post_process_instance(class_logits, mask_logits, [(10, 10), (0, 5)])
    with pytest.raises(ValueError, match=r"valid_sizes\[0\] = \(300, 100\) exceeds input_size \(192, 192\)"):
        post_process_panoptic(class_logits, mask_logits, TARGETS, valid_sizes=[(300, 100), (10, 10)])
    with pytest.raises(ValueError, match="stuff_classes contains \\[25\\], outside the 20 classes"):
        post_process_panoptic(class_logits, mask_logits, TARGETS, stuff_classes=[1, 25])
    with pytest.raises(ValueError, match="disagree on \\(batch, queries\\)"):
        post_process_instance(class_logits, mask_logits[:, :10], TARGETS)
    with pytest.raises(ValueError, match="class_queries_logits must be a \\(batch, queries, classes \\+ 1\\) tensor"):
        post_process_semantic(class_logits[0], mask_logits, TARGETS)
    with pytest.raises(ValueError, match="target_sizes has 3 entries but the outputs hold 2 images"):
        post_process_semantic(class_logits, mask_logits, TARGETS + [(5, 5)])
    with pytest.raises(ValueError, match=r"patch_offsets\[1\] refers to image 2, but target_sizes has 2 entries"):
        post_process_semantic(class_logits, mask_logits, TARGETS, patch_offsets=[(0, 0, INPUT), (2, 0, INPUT)])
    with pytest.raises(ValueError, match="image 1 has no window in patch_offsets"):
        post_process_semantic(class_logits, mask_logits, TARGETS, patch_offsets=[(0, 0, INPUT), (0, 10, 10 + INPUT)])
    with pytest.raises(ValueError, match=r"patch_offsets\[1\] = \(0, 5, 20\) is not a 192-pixel window"):
        post_process_semantic(class_logits, mask_logits, TARGETS[:1], patch_offsets=[(0, 0, INPUT), (0, 5, 20)])
    with pytest.raises(ValueError, match="target_sizes is empty"):
        post_process_semantic(class_logits[:0], mask_logits[:0], [])


def test_bad_windows_name_the_problem():
    class_logits, mask_logits = realistic(batch=2, seed=14)
    with pytest.raises(ValueError, match="leave part of its resized size \\(192, 400\\) uncovered \\(from 192\\)"):
        post_process_semantic(class_logits, mask_logits, [(100, 200)], patch_offsets=[(0, 0, 192), (0, 208, 400)], resized_sizes=[(192, 400)])
    with pytest.raises(ValueError, match="image 0's resized size \\(200, 300\\) is larger across than its windows"):
        post_process_semantic(class_logits, mask_logits, [(100, 150)], patch_offsets=[(0, 0, 192), (0, 108, 300)], resized_sizes=[(200, 300)])
    with pytest.raises(ValueError, match="valid_sizes is for inputs without windows"):
        post_process_semantic(class_logits, mask_logits, [(100, 150)], patch_offsets=[(0, 0, 192), (0, 108, 300)], valid_sizes=[(1, 1)])
