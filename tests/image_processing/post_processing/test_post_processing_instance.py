"""Instance post-processing (image_processing.post_processing.instance): parity with transformers on the same
outputs, binary maps with their overlaps, empty results."""

import pytest
import torch

from image_processing.post_processing import post_process_instance, undo_padding_and_resize
from tests.image_processing.post_processing.helpers import CLASSES, INPUT, TARGETS, outputs_for, padded_processor, realistic, valid_sizes


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


def test_instance_without_confident_queries_is_empty():
    _, mask_logits = realistic(batch=2, seed=10)
    class_logits = torch.zeros(2, mask_logits.shape[1], CLASSES + 1)  # uniform classes: no score reaches 0.8
    for target, result in zip(TARGETS, post_process_instance(class_logits, mask_logits, TARGETS)):
        assert result["segments_info"] == [] and result["segmentation"].shape == target
        assert (result["segmentation"] == -1).all()
    binary = post_process_instance(class_logits, mask_logits, TARGETS, return_binary_maps=True)[0]["segmentation"]
    assert binary.shape == (0, *TARGETS[0])
