"""What every post-processing accepts (image_processing.post_processing.checks): low-precision logits, sizes as
tensors, and bad input refused with an error naming the problem."""

import pytest
import torch

from image_processing.post_processing import post_process_instance, post_process_panoptic, post_process_semantic
from tests.image_processing.post_processing.helpers import INPUT, TARGETS, realistic, valid_sizes


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


@pytest.mark.parametrize("name, value", [
    ("threshold", 80), ("threshold", -0.1), ("threshold", float("nan")), ("threshold", "0.8"), ("threshold", True),
    ("mask_threshold", 1.5), ("overlap_mask_area_threshold", None),
])  # fmt: skip
def test_thresholds_outside_zero_one_are_refused(name, value):
    class_logits, mask_logits = realistic(batch=2, seed=13)
    with pytest.raises(ValueError, match=rf"{name} must be a number in \[0, 1\], got {value!r}"):
        post_process_panoptic(class_logits, mask_logits, TARGETS, **{name: value})
    if name == "threshold":
        with pytest.raises(ValueError, match=rf"threshold must be a number in \[0, 1\], got {value!r}"):
            post_process_instance(class_logits, mask_logits, TARGETS, threshold=value)
    edges = post_process_panoptic(class_logits, mask_logits, TARGETS, **{name: 0.0}), post_process_instance(
        class_logits, mask_logits, TARGETS, threshold=1.0
    )  # the ends of [0, 1] are accepted
    assert all(result["segmentation"].shape == target for results in edges for result, target in zip(results, TARGETS))
