"""The small-model training-step section runs both models with their own losses and reports the loss share."""

import pytest
import torch

from benchmarks.runner import run_benchmark
from benchmarks.sections.small_training import disc_targets, ours_loss, reference_loss
from modeling_eomt.loss_eomt import MaskClassificationLoss
from tests.benchmarks.helpers import parse

# A tiny ViT on 32 px images (16x16 mask logits) with 64 points per mask: seconds, not minutes.
TINY_SMALL_MODEL = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, image_size=32, train_num_points=64
)


def test_small_training_section_prints_the_step_and_the_loss_share_of_both_models(capsys):
    args = parse(*"--sections small-training --repeats 2 --warmup 0 --threads 1".split())
    results = run_benchmark(args, config_overrides=TINY_SMALL_MODEL)
    table = capsys.readouterr().out
    rows = {result.case.split(" (")[0]: result for result in results}
    expected_rows = {"step", "loss + its backward", "loss + its backward, transformers' points", "loss share of the step"}
    assert set(rows) == expected_rows
    assert "| small-training | step (ViT 32x3, patch 8, 32px, batch 8, 24 queries, 3 levels) |" in table
    assert "| small-training | loss share of the step |" in table
    assert "ours 64 points per mask (16x16 mask logits), transformers 64" in table
    for result in results:
        assert result.ours.median > 0 and result.reference.median > 0
    for share in (rows["loss share of the step"].ours, rows["loss share of the step"].reference):
        assert 0 < share.min and share.max < 1.5  # the loss alone is a part of a step (timing noise aside)


def test_both_losses_of_the_section_agree_on_the_same_points():
    """The section times like with like: for the same seed both losses draw the same points and give the same value
    (here with more targets per image, 6-10, than queries, 5)."""
    from transformers import EomtConfig, EomtForUniversalSegmentation

    config = EomtConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=2, image_size=32, num_labels=6,
        train_num_points=50,
    )  # fmt: skip
    reference = EomtForUniversalSegmentation(config)
    mask_labels, class_labels = disc_targets(3, 32, num_labels=6, seed=0)
    generator = torch.Generator().manual_seed(1)
    masks = [torch.randn(3, 5, 8, 8, generator=generator) for _ in range(3)]
    classes = [torch.randn(3, 5, 7, generator=generator) for _ in range(3)]
    torch.manual_seed(2)
    float_labels = [labels.float() for labels in mask_labels]
    expected = reference_loss(reference)(masks[-1], classes[-1], float_labels, class_labels, masks[:-1], classes[:-1])
    torch.manual_seed(2)
    criterion = MaskClassificationLoss(num_labels=6, num_points=50)
    ours = ours_loss(criterion)(masks[-1], classes[-1], mask_labels, class_labels, masks[:-1], classes[:-1])
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
