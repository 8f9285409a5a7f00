"""`training.resume`: what `--resume` requires of a checkpoint (`eomt train --resume` on broken checkpoints and changed
options: `tests/robustness/test_robustness_train.py`)."""

import json

import pytest
import torch

from training.resume import check_resumable


def test_sharded_checkpoints_are_checked_for_what_they_hold(tmp_path):
    """FSDP / DeepSpeed checkpoints keep weights and optimizer state in their own folders: no optimizer.pt needed,
    but the trainer state and the random state still are."""
    checkpoint = tmp_path / "checkpoint-6"
    (checkpoint / "optimizer_0").mkdir(parents=True)
    torch.save({"python": 1}, checkpoint / "rng_state_0.pth")
    with pytest.raises(ValueError, match=r"checkpoint-6 is incomplete: no trainer_state\.json \(an interrupted save"):
        check_resumable(checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    check_resumable(checkpoint)
    (checkpoint / "trainer_state.json").write_text('{"global_step": ')
    with pytest.raises(ValueError, match=r"trainer_state\.json: not readable"):
        check_resumable(checkpoint)
