"""Two processes with `accelerate launch` (gloo on the CPU): a short `eomt train` run whose ranks end with the same
weights and report the same evaluation, equal to a single-process evaluation of the whole set."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training.data_helpers import crop_validation_images
from tests.training.helpers import free_port, single_thread  # noqa: F401 (fixture)
from image_processing import EoMTImageProcessor
from modeling_eomt import EoMTForUniversalSegmentation
from training.data import EvalDataset, make_eval_dataset, write_synthetic_ade20k
from training.evaluation import ShardSampler
from training.run import evaluate
from training.trainer import EoMTTrainer, recipe_training_arguments

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("multiprocess_train.py")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    data = write_synthetic_ade20k(tmp_path_factory.mktemp("ade"), num_train=8, num_val=5, size=48, seed=1)
    crop_validation_images(data, width=48)
    output_dir = tmp_path_factory.mktemp("run") / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), str(WORKER), str(data), str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in range(2)]
    return data, output_dir, ranks, seconds


def test_ranks_end_with_identical_weights(two_process_run):
    _, output_dir, ranks, seconds = two_process_run
    print(f"two-process train + evaluate: {seconds:.1f} s")
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    history = json.loads((output_dir / "log_history.json").read_text())
    assert max(record["step"] for record in history) == 8


def test_metrics_are_reduced_across_ranks(two_process_run, single_thread):
    data, output_dir, ranks, _ = two_process_run
    names = ("eval_miou", "eval_pixel_accuracy", "eval_loss")
    assert [ranks[0]["metrics"][name] for name in names] == [ranks[1]["metrics"][name] for name in names]

    single = evaluate(str(output_dir), str(data), batch_size=2, workers=0, progress=False, output=output_dir / "single.json")
    assert single["eval_miou"] == ranks[0]["metrics"]["eval_miou"]  # integer confusion matrices: exact
    assert single["eval_pixel_accuracy"] == ranks[0]["metrics"]["eval_pixel_accuracy"]

    # What rank 0 saw alone gives another result: the reported one is over both shards.
    shard = list(ShardSampler(5, rank=0, world_size=2))
    assert shard == [0, 2, 4]
    source = make_eval_dataset(str(data), "val").source.select(shard)
    trainer = EoMTTrainer(
        model=EoMTForUniversalSegmentation.from_pretrained(output_dir),
        args=recipe_training_arguments(str(output_dir), use_cpu=True, report_to="none", disable_tqdm=True),
        eval_dataset=EvalDataset(source),
        processing_class=EoMTImageProcessor.from_pretrained(output_dir),
        mask_annealing=False,
    )
    alone = trainer.evaluate()
    assert np.isfinite(alone["eval_miou"]) and alone["eval_miou"] != single["eval_miou"]
