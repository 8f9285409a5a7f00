"""Broken model folders and weight files through `from_pretrained`, `eomt evaluate`, `eomt convert` and
`eomt train --checkpoint`: an error naming the file (and the field or tensors), exit status 2, nothing overwritten."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_eomt import EoMTForUniversalSegmentation
from tests.robustness.cases import Case, as_params, check_case, edit_json, truncate
from tests.training.commands.helpers import FAST


def broken_model(edit, artifact: str = "model"):
    """A copy of the session's model at `c.dir/model`, broken by `edit(folder)`."""

    def build(c):
        folder = c.copy(artifact, "model")
        edit(folder)
        return folder

    return build


def config_field(**fields):
    return lambda folder: edit_json(folder / "config.json", lambda config: config.update(fields))


def nan_weights(folder):
    state = load_file(folder / "model.safetensors")
    for name in ("eomt.layers.0.norm1.weight", "class_predictor.bias"):
        state[name][0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def unsafe_pickle(c):
    """An original checkpoint whose pickle holds an object besides tensors."""
    path = c.dir / "unsafe.ckpt"
    torch.save({"state_dict": load_file_or_bin(c.original), "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    return path


def load_file_or_bin(path):
    return torch.load(path, weights_only=True)


TRUNCATED = lambda folder: truncate(folder / "model.safetensors")  # noqa: E731
BROKEN = {  # what is broken -> (how, the message)
    "truncated weights": (TRUNCATED, ["{dir}/model/model.safetensors: not a readable safetensors file"]),
    "hidden_size a string": (config_field(hidden_size="64"), ["{dir}/model/config.json: Invalid EoMTConfig: "
                             "hidden_size must be an integer, got '64' (str)"]),
    "fractional layer count": (config_field(num_hidden_layers=2.5), ["{dir}/model/config.json", "num_hidden_layers "
                               "must be an integer, got 2.5"]),
    "zero heads": (config_field(num_attention_heads=0), ["{dir}/model/config.json", "num_attention_heads must be >= 1"]),
    "invalid config JSON": (lambda folder: (folder / "config.json").write_text('{"hidden_size": 32,'),
                            ["{dir}/model/config.json: not valid JSON"]),
    "config not an object": (lambda folder: (folder / "config.json").write_text("[32, 3]"),
                             ["{dir}/model/config.json: expected a JSON object, got list"]),
}  # fmt: skip
HELD = {  # already clear before issue 13
    "unknown ffn type": (config_field(ffn_type="moe"), ["ffn_type='moe' is not one of ('mlp', 'swiglu', 'glu')"]),
    "a weight of the wrong shape": (
        lambda folder: save_file({**load_file(folder / "model.safetensors"), "class_predictor.bias": torch.zeros(3)},
                                 folder / "model.safetensors", metadata={"format": "pt"}),
        ["class_predictor.bias: checkpoint (3,) vs model (9,)"]),
    "a missing weight": (
        lambda folder: save_file({k: v for k, v in load_file(folder / "model.safetensors").items()
                                  if k != "eomt.layernorm.weight"}, folder / "model.safetensors", metadata={"format": "pt"}),
        ["missing", "eomt.layernorm.weight"]),
}  # fmt: skip


def from_pretrained(edit, artifact="model"):
    return lambda c: (lambda: EoMTForUniversalSegmentation.from_pretrained(broken_model(edit, artifact)(c)))


def evaluate(edit):
    return lambda c: [broken_model(edit)(c), "--data", c.coco, "--cpu", "--no-progress", "--workers", 0]


def convert(edit):
    return lambda c: [broken_model(edit)(c), c.dir / "out"]


LOADING = [
    *(Case("from_pretrained", name, from_pretrained(edit), expect=expect) for name, (edit, expect) in {**BROKEN, **HELD}.items()),
    Case("from_pretrained", "no weights", from_pretrained(lambda folder: (folder / "model.safetensors").unlink()),
         expect=["no file named model.safetensors", "{dir}/model"], error=OSError),
    Case("from_pretrained", "transformers format, truncated weights", from_pretrained(TRUNCATED, "transformers_model"),
         expect=["{dir}/model/model.safetensors: not a readable safetensors file"]),
    Case("from_pretrained", "transformers format, hidden_size a string",
         from_pretrained(config_field(hidden_size="64"), "transformers_model"),
         expect=["{dir}/model/config.json: Invalid EoMTConfig: hidden_size must be an integer"]),
    Case("from_pretrained", "NaN weights", from_pretrained(nan_weights), error=None,
         expect=["{dir}/model: 2 of", "tensors hold NaN or infinite values", "eomt.layers.0.norm1.weight",
                 "class_predictor.bias"]),
    *(Case("evaluate", name, evaluate(edit), expect=expect, absent=["model/eval_metrics.json"])
      for name, (edit, expect) in BROKEN.items()),
    Case("evaluate", "NaN weights", evaluate(nan_weights), expect=["{dir}/model: 2 of", "NaN or infinite",
         "the checkpoint is unusable"], absent=["model/eval_metrics.json"]),
    Case("evaluate", "no such model", lambda c: [c.dir / "nowhere", "--data", c.coco, "--cpu"], expect=["{dir}/nowhere"]),
    *(Case("convert", name, convert(edit), expect=expect, absent=["out"]) for name, (edit, expect) in BROKEN.items()),
    Case("convert", "NaN weights", convert(nan_weights), expect=["{dir}/model: 2 of", "NaN or infinite"], absent=["out"]),
    Case("convert", "unsafe pickle", lambda c: [unsafe_pickle(c), c.dir / "out"],
         expect=["{dir}/unsafe.ckpt: could not be read as a weights-only PyTorch checkpoint"], absent=["out"]),
    Case("convert", "onto a model", lambda c: [c.original, c.copy("model", "out")],
         expect=["output {dir}/out: already holds a model (config.json, model.safetensors); pass --overwrite"],
         keeps=["out"]),
    Case("convert", "onto itself", lambda c: [c.copy("model"), c.dir / "model"],
         expect=["output {dir}/model: already holds a model"], keeps=["model"]),
    Case("convert", "into a file", lambda c: [c.original, (c.dir / "out").write_text("x") and c.dir / "out"],
         expect=["output {dir}/out: exists and is not a directory"], keeps=["out"]),
    Case("train", "--checkpoint with truncated weights",
         lambda c: ["--data", c.coco, "--out", c.dir / "out", "--checkpoint", broken_model(TRUNCATED)(c), *FAST,
                    "--steps", 2, "--no-eval"],
         expect=["{dir}/model/model.safetensors: not a readable safetensors file"], absent=["out"]),
    Case("train", "--checkpoint with NaN weights",
         lambda c: ["--data", c.coco, "--out", c.dir / "out", "--checkpoint", broken_model(nan_weights)(c), *FAST,
                    "--steps", 2, "--no-eval"],
         expect=["{dir}/model: 2 of", "NaN or infinite"], absent=["out"]),
]  # fmt: skip


@pytest.mark.parametrize("case", as_params(LOADING))
def test_broken_model(case, workspace, tmp_path, capsys, caplog):
    check_case(case, workspace, tmp_path, capsys, caplog)
