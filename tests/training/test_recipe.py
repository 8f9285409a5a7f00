"""`eomt train` chooses its recipe for the start point and the data, prints it, and every choice can be overridden."""

import json

import pytest
from transformers import TrainerCallback

from tests.training.helpers import single_thread  # noqa: F401 (fixture)
from training.commands import main as eomt_main
from training.data import load_coco_panoptic
from training.data.synthetic_sets import write_scene_set
from training.recipe import AUTHORS, DataStatistics, augmentation_scale, choose_recipe, data_statistics
from training.run import train
from training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_register_tokens": 0,
              "patch_size": 8}  # fmt: skip


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory):
    """Set A at 48 px: things about 10 px across, with 8 px patches."""
    return write_scene_set(tmp_path_factory.mktemp("set_a"), "A", num_train=8, num_val=2, seed=1, image_size=48)


def settings(root, out, **overrides) -> TrainSettings:
    options = dict(data=str(root), output_dir=str(out), size="S", model_config=TINY_MODEL, num_queries=6, num_blocks=1,
                   image_size=48, max_steps=4, batch_size=2, workers=0, use_cpu=True, progress=False,
                   eval_split=None, num_points=64)  # fmt: skip
    return TrainSettings(**{**options, **overrides})


def test_random_weights_get_the_from_scratch_recipe_and_a_pretrained_start_the_authors(scene_set, tmp_path):
    source = load_coco_panoptic(scene_set, "train")
    scratch = choose_recipe(settings(scene_set, tmp_path, num_points=None), source, 48, 8, total_steps=400)
    assert scratch.name == "from scratch (random initialisation)"
    assert (scratch.learning_rate, scratch.layer_decay, scratch.max_grad_norm) == (1e-3, 1.0, 1.0)
    assert (scratch.head_warmup_steps, scratch.backbone_warmup_steps) == (20, 80)  # 5% of 400, then 20% of 400
    assert scratch.color_jitter is False and scratch.num_points is None and scratch.no_object_weight is None
    assert scratch.reasons["head_warmup_steps"] == "5% of the 400 steps"
    assert scratch.reasons["backbone_warmup_steps"].startswith("20% of the steps")

    pretrained = TrainSettings(data=str(scene_set), output_dir=str(tmp_path), checkpoint="some/eomt")
    authors = choose_recipe(pretrained, source, 48, 8, total_steps=10000)
    assert authors.name == "the authors' (a checkpoint)"
    assert {key: authors.values[key] for key in AUTHORS} == AUTHORS
    # A run too short for the authors' 500 + 1000 warm-up steps gets them shortened to a quarter of it, in proportion.
    short_run = choose_recipe(pretrained, source, 48, 8, total_steps=1200)
    assert (short_run.head_warmup_steps, short_run.backbone_warmup_steps) == (100, 200)
    assert short_run.reasons["backbone_warmup_steps"].startswith("the authors' 1000, shortened with the other warm-up")
    assert short_run.learning_rate == 1e-4 and short_run.layer_decay == 0.8
    forced = choose_recipe(settings(scene_set, tmp_path, recipe="authors"), source, 48, 8, total_steps=400)
    assert forced.name == "the authors' (--recipe authors)" and forced.layer_decay == 0.8
    # The data set's small things raise the zoom-out limit of both recipes, the from-scratch one more.
    assert 0.1 < authors.augmentation_scale[0] < scratch.augmentation_scale[0] <= 1.0
    assert scratch.augmentation_scale[1] == authors.augmentation_scale[1] == 2.0
    # A short run from scratch trains without scale jitter; a long one, or a pre-trained start, keeps it.
    short = choose_recipe(settings(scene_set, tmp_path, num_points=None), source, 48, 8, total_steps=400, passes=6.5)
    assert short.augmentation_scale == (1.0, 1.0) and "6.5 passes over the data" in short.reasons["augmentation_scale"]
    long = choose_recipe(settings(scene_set, tmp_path, num_points=None), source, 48, 8, total_steps=400, passes=30)
    assert long.augmentation_scale == scratch.augmentation_scale
    assert choose_recipe(pretrained, source, 48, 8, 400, passes=6.5).augmentation_scale == authors.augmentation_scale


def test_the_data_is_read_only_when_the_scale_range_depends_on_it(scene_set, tmp_path, monkeypatch):
    source = load_coco_panoptic(scene_set, "train")
    reads = []
    monkeypatch.setattr("training.recipe.data_statistics", lambda *args: reads.append(args) or None)
    choose_recipe(settings(scene_set, tmp_path), source, 48, 8, total_steps=400, passes=6.5)  # short: no jitter
    choose_recipe(settings(scene_set, tmp_path, augmentation_scale=(0.5, 1.5)), source, 48, 8, 400, passes=30)  # given
    assert reads == []
    choose_recipe(settings(scene_set, tmp_path), source, 48, 8, total_steps=400, passes=30)
    assert reads == [(source, 48)]


def test_given_values_win_and_are_reported_as_given(scene_set, tmp_path):
    given = dict(learning_rate=5e-4, layer_decay=0.9, max_grad_norm=0.5, head_warmup_steps=3, backbone_warmup_steps=1,
                 augmentation_scale=(0.7, 1.3), color_jitter=True, num_points=256, no_object_weight=0.2)  # fmt: skip
    recipe = choose_recipe(settings(scene_set, tmp_path, **given), load_coco_panoptic(scene_set, "train"), 48, 8, 400)
    assert recipe.values == given and set(recipe.reasons.values()) == {"given"}
    lines = recipe.describe()
    assert lines[0] == "training recipe: from scratch (random initialisation)"
    assert "  augmentation-scale: 0.7 1.3 (given)" in lines and "  color-jitter: True (given)" in lines
    assert len(lines) == 1 + len(given)


def test_augmentation_scale_keeps_the_median_thing_a_patch_across_in_long_runs():
    statistics = DataStatistics(images=64, image_side=128.0, object_sides=(16.0, 23.2, 32.1), things=True)
    (low, high), reason = augmentation_scale(statistics, patch_size=8, task="panoptic", from_scratch=True)
    assert (low, high) == (0.35, 2.0)  # 8 / 23.2 = 0.345, rounded up to 0.05
    assert "the median thing of 64 training images is 23 px" in reason and "2.9 patches of 8 px" in reason
    assert augmentation_scale(statistics, 8, "panoptic", from_scratch=False)[0] == (0.25, 2.0)  # 8 / 32.1, large things
    large = DataStatistics(64, 640.0, (10.0, 40.0, 180.0), True)  # COCO-like: the authors' range stands
    assert augmentation_scale(large, 16, "panoptic", from_scratch=False)[0] == (0.1, 2.0)
    assert augmentation_scale(large, 16, "semantic", from_scratch=False)[0] == (0.5, 2.0)
    tiny = DataStatistics(64, 96.0, (2.0, 4.0, 6.0), True)
    assert augmentation_scale(tiny, 8, "panoptic", from_scratch=True)[0] == (1.0, 2.0)  # never above 1
    assert augmentation_scale(None, 8, "panoptic", True) == ((0.1, 2.0), "the authors' range for the task (the data was "
                                                             "not inspected)")  # fmt: skip


def test_data_statistics_measure_things_at_the_input_scale(scene_set):
    source = load_coco_panoptic(scene_set, "train")
    native, doubled = data_statistics(source, 48), data_statistics(source, 96)
    assert native.images == 8 and native.things and native.image_side == 48
    assert doubled.object_sides == pytest.approx(tuple(2 * side for side in native.object_sides))
    assert native.object_sides[0] <= native.object_sides[1] <= native.object_sides[2] < 48


class Capture(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, train_dataloader=None, **kwargs):
        self.max_grad_norm = args.max_grad_norm
        self.lrs = {group["name"]: group["initial_lr"] for group in optimizer.param_groups}  # before the warm-up
        self.augmentation = train_dataloader.dataset.augmentation


def test_train_prints_its_recipe_and_trains_with_it(scene_set, tmp_path, capsys):
    capture = Capture()
    train(settings(scene_set, tmp_path / "run", layer_decay=0.5, augmentation_scale=(0.9, 1.1), max_grad_norm=0.3),
          callbacks=[capture])  # fmt: skip
    printed = capsys.readouterr().out
    assert "training recipe: from scratch (random initialisation)" in printed
    assert "  layer-decay: 0.5 (given)" in printed and "  learning-rate: 0.001 (random weights learn" in printed
    assert capture.max_grad_norm == 0.3
    assert capture.lrs["head"] == 1e-3 and capture.lrs["backbone.block0"] == pytest.approx(1e-3 * 0.5)
    assert capture.augmentation.scale_range == (0.9, 1.1) and capture.augmentation.color_jitter is False
    written = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert written["values"]["augmentation_scale"] == [0.9, 1.1] and written["reasons"]["max_grad_norm"] == "given"


def test_cli_recipe_options_reach_the_settings(scene_set, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("training.run.train", lambda settings: seen.setdefault("settings", settings) and {})
    argv = ["train", "--data", str(scene_set), "--out", str(tmp_path), "--model", "S", "--recipe", "scratch",
            "--augmentation-scale", "0.5", "1.5", "--color-jitter", "--num-points", "1024", "--max-grad-norm", "2",
            "--warmup-steps", "10", "20", "--layer-decay", "0.9", "--no-object-weight", "0.3", "--lr", "3e-4"]  # fmt: skip
    assert eomt_main(argv) == 0
    chosen = seen["settings"]
    assert (chosen.recipe, chosen.augmentation_scale) == ("scratch", (0.5, 1.5))
    assert (chosen.color_jitter, chosen.num_points) == (True, 1024)
    assert (chosen.max_grad_norm, chosen.head_warmup_steps, chosen.backbone_warmup_steps) == (2.0, 10, 20)
    assert (chosen.layer_decay, chosen.no_object_weight, chosen.learning_rate) == (0.9, 0.3, 3e-4)
    seen.clear()
    assert eomt_main(argv[:7]) == 0  # nothing given: everything automatic
    assert all(getattr(seen["settings"], name) is None for name in ("augmentation_scale", "color_jitter", "num_points",
               "max_grad_norm", "head_warmup_steps", "layer_decay", "no_object_weight", "learning_rate"))  # fmt: skip
    seen.clear()
    assert eomt_main([*argv[:7], "--no-color-jitter"]) == 0 and seen["settings"].color_jitter is False


def test_recipe_settings_are_checked(scene_set, tmp_path):
    with pytest.raises(ValueError, match="--augmentation-scale needs 0 < MIN <= MAX, got 2 1"):
        settings(scene_set, tmp_path, augmentation_scale=(2, 1))
    with pytest.raises(ValueError, match="--recipe must be one of auto, authors, scratch, got 'fast'"):
        settings(scene_set, tmp_path, recipe="fast")
    with pytest.raises(ValueError, match="--num-points must be positive, got 0"):
        settings(scene_set, tmp_path, num_points=0)
