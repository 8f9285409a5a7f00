"""`EoMTForUniversalSegmentation.forward(pixel_values, mask_labels=..., class_labels=...)` returns the training loss, as
transformers' models do: the same loss as `MaskClassificationLoss` on the outputs, bad labels named per image, and a
training loop written for transformers' `EomtForUniversalSegmentation` runs unchanged on this model."""

import numpy as np
import pytest
import torch
from transformers import EomtConfig, EomtForUniversalSegmentation, EomtImageProcessorPil

from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from tests.modeling.helpers import loss_of_outputs
from tests.training.helpers import random_targets, single_thread, tiny_segmentation_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_forward_with_labels_returns_the_loss_of_every_prediction_level():
    model = tiny_segmentation_model().train()
    pixel_values = torch.randn(2, 3, 64, 64)
    mask_labels, class_labels = random_targets([2, 3], 64, 64, seed=1)
    torch.manual_seed(0)
    outputs = model(pixel_values, mask_labels=mask_labels, class_labels=class_labels)
    torch.manual_seed(0)
    plain = model(pixel_values)
    expected, components = loss_of_outputs(model.config, plain, mask_labels, class_labels)
    assert torch.equal(outputs.loss, expected)
    assert outputs.loss_components.keys() == components.keys() >= {"loss_mask", "loss_mask_block0", "loss_dice_block1"}
    outputs.loss.backward()
    assert model.class_predictor.weight.grad.abs().sum() > 0
    assert model(pixel_values).loss is None and model(pixel_values).loss_components is None


def test_crowd_targets_are_left_out_of_the_loss():
    model = tiny_segmentation_model().eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    (masks,), (labels,) = random_targets([3], 64, 64, seed=2)
    torch.manual_seed(0)
    with_crowd = model(pixel_values, mask_labels=[masks], class_labels=[labels], is_crowd=[torch.tensor([False, True, False])])
    torch.manual_seed(0)
    without = model(pixel_values, mask_labels=[masks[[0, 2]]], class_labels=[labels[[0, 2]]])
    assert torch.equal(with_crowd.loss, without.loss)


def test_unknown_keyword_arguments_are_an_error():
    model = tiny_segmentation_model().eval()
    with pytest.raises(TypeError, match="labels"):
        model(torch.randn(1, 3, 64, 64), labels=torch.zeros(1))


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda masks, classes: (masks, [classes[0], torch.tensor([1, 7])]), r"image 1: class_labels \[7\] are outside \[0, 4\)"),
        (lambda masks, classes: ([masks[0], torch.zeros(0)], classes), r"mask_labels\[1\] must be a \(num_masks, height, width\)"),
        (lambda masks, classes: ([masks[0], masks[1][:, :32, :32]], classes), r"image 1: mask_labels are 32x32 but pixel_values are 64x64"),
        (lambda masks, classes: (masks, [classes[0], classes[1][:1]]), r"image 1: mask_labels has 2 masks but class_labels has 1"),
        (lambda masks, classes: (masks, None), "both mask_labels and class_labels"),
    ],
)
def test_bad_labels_are_named_per_image(bad, message):
    model = tiny_segmentation_model().train()
    mask_labels, class_labels = bad(*random_targets([1, 2], 64, 64, seed=3))
    with pytest.raises(ValueError, match=message):
        model(torch.randn(2, 3, 64, 64), mask_labels=mask_labels, class_labels=class_labels)


def test_the_processor_returns_transformers_training_fields():
    """`processor(images, segmentation_maps=...)` gives `mask_labels` / `class_labels` as transformers' processor does."""
    image = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    semantic = np.zeros((64, 64), np.int64)
    semantic[:20], semantic[40:, 30:] = 2, 3
    ours = EoMTImageProcessor(size=64, ignore_index=None)(images=[image], segmentation_maps=[semantic])
    theirs = EomtImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})(
        images=[image], segmentation_maps=[semantic], return_tensors="pt"
    )
    assert torch.equal(ours["class_labels"][0], theirs["class_labels"][0])
    assert ours["mask_labels"][0].dtype == theirs["mask_labels"][0].dtype
    assert torch.equal(ours["mask_labels"][0], theirs["mask_labels"][0])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"], atol=2e-2)  # resampling filters differ


def training_loop_for_transformers_eomt(model, processor, steps: int = 4) -> list[float]:
    """A loop written for transformers' `EomtForUniversalSegmentation`, as its documentation trains it."""
    rng = np.random.RandomState(0)
    images = [(rng.rand(64, 64, 3) * 60).astype(np.uint8) for _ in range(2)]
    maps = []
    for image in images:
        semantic = np.zeros((64, 64), np.int64)
        semantic[16:48, 8:40] = 1
        image[16:48, 8:40] += 150
        maps.append(semantic)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        inputs = processor(images=images, segmentation_maps=maps, return_tensors="pt")
        outputs = model(**inputs)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(outputs.loss.item())
    return losses


def test_a_training_loop_for_transformers_eomt_runs_unchanged():
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=64,
                 num_queries=4, num_labels=2, train_num_points=256)  # fmt: skip
    torch.manual_seed(0)
    theirs = training_loop_for_transformers_eomt(
        EomtForUniversalSegmentation(EomtConfig(**shape)), EomtImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    )
    torch.manual_seed(0)
    model = EoMTForUniversalSegmentation(EoMTConfig(**shape, num_register_tokens=0))
    ours = training_loop_for_transformers_eomt(model, EoMTImageProcessor(size=64, num_labels=2))
    assert len(ours) == len(theirs) and all(np.isfinite(ours + theirs))
    assert ours[-1] < ours[0]  # it learns from the labels it was given
