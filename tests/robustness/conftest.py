"""The workspace of the robustness cases: tiny models, data sets and a training run with checkpoints, built once per
session on first use (see `cases.Workspace`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.modeling.checkpoints.references import original_state_dict, save_checkpoint, source_model
from tests.robustness.cases import Workspace
from tests.training.commands.helpers import FAST, TINY, run_cli
from tests.training.helpers import single_thread, tiny_inference_model, tiny_segmentation_model  # noqa: F401 (fixture)
from training.data import write_synthetic_ade20k, write_synthetic_coco_instance, write_synthetic_coco_panoptic

SIZE = 32


def _model(path: Path, workspace: Workspace) -> Path:
    tiny_segmentation_model(num_labels=8, image_size=SIZE).save_pretrained(path)
    return path


def _inference_model(path: Path, workspace: Workspace) -> Path:
    """A mask-free tiny model, as `eomt predict` gets it (`tiny_inference_model`)."""
    torch.manual_seed(0)
    tiny_inference_model().save_pretrained(path)
    return path


def _transformers_model(path: Path, workspace: Workspace) -> Path:
    from modeling_eomt.checkpoints import save_as_transformers_eomt

    save_as_transformers_eomt(tiny_segmentation_model(num_labels=8, image_size=SIZE), path)
    return path


def _original(path: Path, workspace: Workspace) -> Path:
    path.mkdir(parents=True)
    return save_checkpoint(original_state_dict(source_model("dinov2-registers")), path, "bin")


def _cityscapes(root: Path, workspace: Workspace) -> Path:
    """Two images per split with `*_gtFine_labelIds.png` holding label ids 0 (ignored), 7 (road) and 26 (car)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(2):
            stem = f"city_{index:06d}_000019"
            for folder, suffix, array in (
                ("leftImg8bit", "_leftImg8bit.png", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)),
                ("gtFine", "_gtFine_labelIds.png", np.repeat(np.array([0, 7, 26, 7], np.uint8), SIZE * SIZE // 4)),
            ):
                (root / folder / split / "city").mkdir(parents=True, exist_ok=True)
                Image.fromarray(array.reshape(SIZE, SIZE, *array.shape[1:][-1:])).save(
                    root / folder / split / "city" / f"{stem}{suffix}"
                )
    return root


def _run(path: Path, workspace: Workspace) -> Path:
    """`eomt train` for 4 steps, checkpoints at steps 2 and 4, on the session's COCO panoptic set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = run_cli("train", "--data", workspace.get("coco"), "--out", path, *TINY, *FAST, "--steps", 4,
                         "--save-steps", 2, "--no-eval", "--save-total-limit", 3)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return path


BUILDERS = {
    "model": _model,
    "inference_model": _inference_model,
    "transformers_model": _transformers_model,
    "original": _original,
    "coco": lambda root, _: write_synthetic_coco_panoptic(root, num_train=4, num_val=2, size=SIZE, seed=1),
    "coco_instance": lambda root, _: write_synthetic_coco_instance(root, 3, 1, size=SIZE, seed=2),
    "ade": lambda root, _: write_synthetic_ade20k(root, 3, 1, size=SIZE, seed=2),
    "cityscapes": _cityscapes,
    "run": _run,
}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("robustness"), BUILDERS)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every case on one thread (`single_thread`): tiny models run fastest so on a shared machine."""
