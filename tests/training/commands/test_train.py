"""`eomt train` on generated data sets: outputs, resuming, and bad input reported as one line."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback, pipeline

from modeling_eomt import EoMTForUniversalSegmentation
from tests.training.commands.helpers import FAST, TINY, assert_error, run_cli
from tests.training.helpers import single_thread, tiny_segmentation_model  # noqa: F401 (fixture)
from training import allocator
from training.data import CLASS_NAMES, write_synthetic_coco_panoptic
from training.run import train
from training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("single_thread")


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def test_train_writes_a_loadable_model_metrics_history_and_curves(trained_run, panoptic_root):
    out, printed = trained_run
    assert "eval_pq:" in printed
    assert "training recipe: from scratch (random initialisation)" in printed
    assert allocator.keeps_freed_memory() == allocator.runs_on_glibc()  # on the CPU: freed memory kept for the next step
    assert "class-score threshold | PQ | PQ things | PQ stuff\n                  0.3 | " in printed  # the sweep

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_pq", "eval_sq", "eval_rq", "eval_pq_things", "eval_pq_stuff", "eval_loss", "eval_pq@0.5"} <= set(metrics)
    saved = json.loads((out / "preprocessor_config.json").read_text())
    chosen = metrics["calibration"]["chosen"]  # from the final evaluation's sweep of both thresholds
    assert len(chosen["sweep"]) == 6 * 3 and chosen["threshold"] == metrics["eval_threshold"] == saved["threshold"]
    assert chosen["overlap_mask_area_threshold"] == metrics["eval_overlap_mask_area_threshold"]
    assert metrics["eval_overlap_mask_area_threshold"] == saved["overlap_mask_area_threshold"]
    assert metrics["eval_pq"] == metrics[f"eval_pq@{saved['threshold']:g}"]
    assert f"post-processing: threshold {saved['threshold']:g}, mask overlap " in printed
    calibration_keys = {"threshold", "above_threshold", "best_score", "silent_things", "silent_stuff", "sweep", "chosen"}
    assert set(metrics["calibration"]) == calibration_keys
    assert set(metrics["per_class"]) <= set(CLASS_NAMES) and metrics["per_class"]
    history = json.loads((out / "log_history.json").read_text())
    assert [record["step"] for record in history if "eval_pq" in record] == [2, 4, 4]  # steps 2, 4 and the final one
    assert [record["step"] for record in history if "loss" in record] == [1, 2, 3, 4]
    assert all("attn_mask_prob_1" in record for record in history if "loss" in record)
    for name in ("loss.png", "annealing.png", "eval_metrics.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300

    model = EoMTForUniversalSegmentation.from_pretrained(out)
    assert model.config.num_labels == 8 and model.config.id2label[0] == CLASS_NAMES[0]
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]  # annealed: runs mask-free
    segmenter = pipeline("image-segmentation", model=str(out), subtask="semantic")
    with Image.open(next((panoptic_root / "val2017").glob("*.jpg"))) as image:
        segments = segmenter(image.convert("RGB"))
    assert segments and {segment["label"] for segment in segments} <= set(CLASS_NAMES)
    assert all(segment["mask"].size == (32, 32) for segment in segments)


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def settings(root, out, **overrides) -> TrainSettings:
    options = dict(
        data=str(root), output_dir=str(out), size="S", model_config={"hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_register_tokens": 0}, num_queries=6, num_blocks=2, image_size=32, max_steps=6,
        batch_size=2, learning_rate=1e-3, head_warmup_steps=1, backbone_warmup_steps=1, workers=0, use_cpu=True,
        progress=False, save_steps=3, eval_split=None,
    )  # fmt: skip
    return TrainSettings(**{**options, **overrides})


def test_resume_continues_exactly_and_evaluation_does_not_disturb_training(panoptic_root, tmp_path):
    train(settings(panoptic_root, tmp_path / "whole"))
    expected = weights(tmp_path / "whole")

    train(settings(panoptic_root, tmp_path / "resumed"), callbacks=[StopAt(3)])  # "interrupted" after step 3
    assert not all(torch.equal(expected[k], v) for k, v in weights(tmp_path / "resumed").items())
    assert run_cli("train", "--data", panoptic_root, "--out", tmp_path / "resumed", *TINY, *FAST, "--steps", 6,
                   "--save-steps", 3, "--no-eval", "--resume") == 0  # fmt: skip
    resumed = weights(tmp_path / "resumed")
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)

    # Evaluating every 2 steps (the loss samples random points) leaves the training draws alone.
    train(settings(panoptic_root, tmp_path / "evaluated", eval_split="val", eval_steps=2))
    evaluated = weights(tmp_path / "evaluated")
    assert all(torch.equal(expected[key], evaluated[key]) for key in expected)


# ---- bad input: one line on stderr, exit status 2 (3 when the run stopped part-way), no traceback ----


def test_data_problems_are_reported_before_training(panoptic_root, tmp_path, capsys):
    broken = tmp_path / "broken"
    write_synthetic_coco_panoptic(broken, num_train=3, num_val=1, size=32, seed=1)
    missing = next((broken / "train2017").glob("*.jpg"))
    missing.unlink()
    annotations = broken / "annotations" / "panoptic_train2017.json"
    document = json.loads(annotations.read_text())
    document["annotations"][1]["segments_info"][0]["category_id"] = 999
    annotations.write_text(json.dumps(document))

    message = assert_error(capsys, "train", "--data", broken, "--out", tmp_path / "out", *TINY, *FAST, "--steps", 2,
                           expected=f"{missing}: missing image file")  # fmt: skip
    assert "has category_id 999, not in the categories" in message  # every problem, in one message
    assert not (tmp_path / "out").exists()  # nothing started


def test_a_corrupt_image_found_during_training_is_named(tmp_path, capsys):
    root = write_synthetic_coco_panoptic(tmp_path / "data", num_train=4, num_val=1, size=32, seed=2)
    corrupt = sorted((root / "train2017").glob("*.jpg"))[3]
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) * 3 // 4])  # the header reads, the pixels do not
    arguments = ["train", "--data", root, "--out", tmp_path / "out", *TINY, *FAST, "--steps", 4, "--no-eval"]
    message = assert_error(capsys, *arguments, expected=str(corrupt))  # the validation pass reads every record
    assert "problem(s)" in message and "truncated" in message and not (tmp_path / "out").exists()
    message = assert_error(capsys, *arguments, "--skip-validation", "--workers", 1, status=3,
                           expected="error: training stopped at step ")  # fmt: skip
    assert str(corrupt) in message and "truncated" in message


def test_class_mismatch_with_a_checkpoint_needs_reinitialized_heads(panoptic_root, tmp_path, capsys):
    checkpoint = tmp_path / "coco133"
    tiny_segmentation_model(num_labels=4, image_size=32).save_pretrained(checkpoint)  # 4 classes, the data set has 8
    assert_error(capsys, "train", "--data", panoptic_root, "--out", tmp_path / "a", "--checkpoint", checkpoint, *FAST,
                 "--steps", 2, expected="predicts 4 classes but")  # fmt: skip

    assert run_cli("train", "--data", panoptic_root, "--out", tmp_path / "b", "--checkpoint", checkpoint,
                   "--reinitialize-heads", *FAST, "--steps", 2, "--no-eval") == 0  # fmt: skip
    fine_tuned = EoMTForUniversalSegmentation.from_pretrained(tmp_path / "b")
    original = EoMTForUniversalSegmentation.from_pretrained(checkpoint)
    assert fine_tuned.config.num_labels == 8 and fine_tuned.class_predictor.out_features == 9
    assert fine_tuned.config.num_hidden_layers == original.config.num_hidden_layers


def test_settings_errors(panoptic_root, tmp_path, capsys):
    assert_error(capsys, "train", "--data", panoptic_root, "--out", tmp_path / "none", *TINY, *FAST, "--resume",
                 expected="--resume: no checkpoint-* folder in")  # fmt: skip
    (tmp_path / "used" / "checkpoint-3").mkdir(parents=True)
    assert_error(capsys, "train", "--data", panoptic_root, "--out", tmp_path / "used", *TINY, *FAST,
                 expected="already holds checkpoints: pass --resume")  # fmt: skip
    assert_error(capsys, "train", "--data", tmp_path, "--out", tmp_path / "x", *TINY, expected="holds no known layout")
    with pytest.raises(SystemExit) as exit_info:  # argparse: exactly one model source
        run_cli("train", "--data", panoptic_root, "--out", tmp_path / "y")
    assert exit_info.value.code == 2
    assert "one of the arguments --model --backbone --checkpoint is required" in capsys.readouterr().err
