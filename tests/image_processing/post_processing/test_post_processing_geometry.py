"""The geometry of post-processing (image_processing.post_processing.geometry): torch's own bilinear taps, the crop
that computes only the valid region, and non-square inputs without padding."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.eomt.image_processing_pil_eomt import compute_segments

from benchmarks.inputs import synthetic_outputs
from image_processing.post_processing import post_process_panoptic, post_process_semantic, upsample_and_crop
from image_processing.post_processing.geometry import _linear_taps
from tests.image_processing.post_processing.helpers import CLASSES, INPUT, QUERIES


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
