"""`training.demo` with the `--quick` recipe: every output of a demo run exists and is well-formed, and the ablation
variants use masked attention as named.

The demo's quality claim (mask-free PQ >= 60 with the default recipe) takes minutes and is measured, not tested here.
"""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from modeling_eomt import EoMTForUniversalSegmentation
from training.annealing import MaskAnnealingCallback
from training.data import CLASS_NAMES
from training.demo import DemoRecipe, run_demo
from training.demo.recipe import ANNEALED, MASK_FREE, MASKED, demo_trainer
from training.demo.run import THREADS, torch_threads

PQ_KEYS = {"pq", "pq_things", "pq_stuff", "sq", "rq"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The output folder of one quick demo run."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, DemoRecipe.quick(), seed=0)
    return out


def test_demo_writes_pngs(demo_dir):
    recipe = DemoRecipe.quick()
    grid = Image.open(demo_dir / "overlays.png")
    assert grid.format == "PNG"
    # 3 columns of 2x upscaled images (the overlays with legends on their right), 4 rows, a header
    assert grid.width > 3 * 2 * recipe.image_size and grid.height > 4 * 2 * recipe.image_size
    pixels = np.asarray(grid.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # images and overlays, not a blank canvas
    for name in ("loss.png", "annealing.png"):
        curve = Image.open(demo_dir / name)
        assert curve.format == "PNG" and curve.width >= 400 and curve.height >= 300


def test_demo_report_and_metrics(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert set(metrics["pq"]) == {"mask-free", "masked"}
    for quality in metrics["pq"].values():
        assert PQ_KEYS <= set(quality) and 0 <= quality["pq"] <= 100
    assert metrics["recipe"]["steps"] == DemoRecipe.quick().steps
    assert {"data generation", "training", "evaluation", "total"} <= set(metrics["timings"])
    assert metrics["timings"]["total"]["wall_s"] > metrics["timings"]["training"]["wall_s"] > 0
    assert all(latency > 0 for latency in metrics["forward_ms_per_image"].values())

    report = (demo_dir / "report.md").read_text()
    mask_free = re.search(r"\| mask-free \(default\) \| (\d+\.\d) \|", report)
    assert mask_free and float(mask_free.group(1)) == pytest.approx(metrics["pq"]["mask-free"]["pq"], abs=0.05)
    assert re.search(r"\| masked attention kept \| \d+\.\d \|", report)
    for image in ("overlays.png", "loss.png", "annealing.png"):
        assert f"]({image})" in report
    assert "| total |" in report and "| `steps` | `6` |" in report


def test_demo_data_is_coco_panoptic(demo_dir):
    recipe = DemoRecipe.quick()
    for split, count in (("train", recipe.num_train), ("val", recipe.num_val)):
        document = json.loads((demo_dir / "data" / "annotations" / f"panoptic_{split}2017.json").read_text())
        assert len(document["images"]) == len(document["annotations"]) == count
        assert [category["name"] for category in document["categories"]] == list(CLASS_NAMES)


def test_demo_model_loads_with_pipeline_and_segments(demo_dir):
    model_dir = demo_dir / "model"
    model = EoMTForUniversalSegmentation.from_pretrained(model_dir)
    assert torch.equal(model.attn_mask_probs, torch.zeros(DemoRecipe.quick().num_blocks))  # annealed: mask-free
    segmenter = pipeline("image-segmentation", model=str(model_dir), device="cpu")
    image = Image.open(next((demo_dir / "data" / "val2017").glob("*.jpg"))).resize((50, 40))
    segments = segmenter(image, subtask="semantic")
    assert segments and {segment["label"] for segment in segments} <= set(CLASS_NAMES)
    covered = sum(np.asarray(segment["mask"]) > 0 for segment in segments)
    assert covered.shape == (40, 50) and (covered == 1).all()  # one class per pixel


@pytest.mark.parametrize(
    "variant, annealing, probability_after",
    [(ANNEALED, True, 0.0), (MASKED, False, 1.0), (MASK_FREE, False, 0.0)],
    ids=lambda value: value.name if hasattr(value, "name") else None,
)
def test_ablation_variants_use_masked_attention_as_named(demo_dir, tmp_path, variant, annealing, probability_after):
    trainer = demo_trainer(DemoRecipe.quick(), demo_dir / "data", tmp_path, seed=0, variant=variant, progress=False)
    assert any(isinstance(callback, MaskAnnealingCallback) for callback in trainer.callback_handler.callbacks) == annealing
    assert trainer.model.attn_mask_probs.tolist() == [variant.initial_probability]
    with torch_threads(THREADS):
        trainer.train()
    assert trainer.model.attn_mask_probs.tolist() == [probability_after]
    logged = [record["attn_mask_prob_0"] for record in trainer.state.log_history if "attn_mask_prob_0" in record]
    assert (logged[0], logged[-1]) == (1.0, 0.0) if annealing else logged == []


def test_bad_recipe_settings_are_named():
    with pytest.raises(ValueError, match="steps, num_train and num_val must be positive"):
        DemoRecipe(steps=0)
