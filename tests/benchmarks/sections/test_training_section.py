"""The training section: both models get the same loss and the same update from one training step."""

import pytest
import torch

from benchmarks.context import build_config, build_model_pair
from benchmarks.sections.training import build_training_loss, random_targets, training_step_function
from tests.benchmarks.helpers import TINY


def test_training_step_gives_both_models_the_same_loss_and_update():
    pair = build_model_pair(build_config("S", image_size=32, num_queries=5, **TINY), torch.device("cpu"))
    pair.set_mask_probability(1.0)
    pixel_values = torch.randn(2, 3, 32, 32)
    targets = random_targets(2, 32, num_masks=3, seed=0, device=torch.device("cpu"))
    losses = {}
    project_loss, _ = build_training_loss(pair.config)

    def recording_loss(name):
        def loss(*args):
            torch.manual_seed(0)  # the same sampled points for both models
            value = project_loss(*args)
            levels = len(args[4]) + 1  # intermediate predictions + the final one
            losses[name] = (value.item(), levels)
            return value

        return loss

    training_step_function(pair.ours, pixel_values, targets, recording_loss("ours"))()
    training_step_function(pair.reference, pixel_values, targets, recording_loss("reference"))()
    assert losses["ours"][1] == losses["reference"][1] == pair.config.num_blocks + 1
    assert losses["ours"][0] == pytest.approx(losses["reference"][0], rel=1e-5)
    ours = pair.ours.class_predictor.weight
    reference = pair.reference.class_predictor.weight
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)  # the same AdamW step on the same gradients
