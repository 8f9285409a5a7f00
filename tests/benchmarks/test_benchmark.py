"""The benchmark's measuring tools and sections measure what they claim (tiny sizes; no speed is asserted)."""

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from benchmarks.benchmark import (
    build_config,
    build_model_pair,
    build_training_loss,
    random_targets,
    run_benchmark,
    training_step_function,
)
from benchmarks.measure import Stats, count_flops, paired_ratios, peak_rss_delta, time_interleaved
from benchmarks.options import add_benchmark_arguments
from training.cli import main as eomt


# A tiny ViT (transformers' EoMT derives the FFN width from mlp_ratio, so that stays at 4).
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2)


def parse(*argv: str) -> argparse.Namespace:
    return add_benchmark_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_stats_and_paired_ratios():
    stats = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median, stats.q1, stats.q3, stats.min, stats.max, stats.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    ratios = paired_ratios([2.0, 4.0, 9.0], [1.0, 4.0, 3.0])  # per pair: 2, 1, 3
    assert (ratios.median, ratios.min, ratios.max) == (2.0, 1.0, 3.0)


def test_time_interleaved_alternates_the_order_and_skips_warmup():
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(samples["a"]), len(samples["b"])] == [3, 3]
    assert all(seconds >= 0 for seconds in samples["a"] + samples["b"])


def test_count_flops_includes_the_cpu_attention_kernel():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    query = key = value = torch.randn(2, 3, 10, 8)  # (B, heads, T, D)
    assert count_flops(lambda: F.scaled_dot_product_attention(query, key, value)) == 4 * 2 * 3 * 10 * 10 * 8


def test_peak_rss_delta_sees_a_temporary_allocation():
    size = 200 * 2**20

    def step():
        buffer = torch.ones(size // 4)  # touched, then freed when the step returns
        return buffer.sum()

    (delta,) = peak_rss_delta(step, repeats=1)
    assert size * 0.95 < delta < size * 1.3


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


def test_forward_end_to_end_and_throughput_sections_report_matching_models(tmp_path, capsys):
    out = tmp_path / "results.json"
    options = "--sections forward,end-to-end,throughput --image-size 32 --queries 5 --repeats 2 --warmup 0"
    options += " --e2e-batch-sizes 1,2 --threads 1 --matmul-size 256"  # one thread: no waiting on a busy core
    args = parse(*options.split(), "--out", str(out))
    results = run_benchmark(args, config_overrides=TINY)
    table = capsys.readouterr().out
    assert "| forward | mask-free (S/16, 32px, 5 queries)" in table  # the size name; TINY shrinks the model
    report = json.loads(out.read_text())
    assert [row["case"] for row in report["results"]] == [result.case for result in results]
    forward = [row for row in report["results"] if "max_abs_difference" in row]
    assert len(forward) == 2 and all(row["max_abs_difference"] < 1e-4 for row in forward)  # mask-free and masked
    assert all(row["ratio"]["median"] > 0 for row in report["results"] if row["ratio"])
    end_to_end = [row for row in report["results"] if row["section"] == "end-to-end"]
    assert [row["case"] for row in end_to_end] == [
        "image -> panoptic, batch 1 (24x32 images)",
        "image -> panoptic, batch 1 (24x32 images), ours bf16",
        "image -> panoptic, batch 2 (24x32 images)",
        "image -> panoptic, batch 2 (24x32 images), ours bf16",
    ]
    assert "100.0% of pixels agree" in end_to_end[0]["notes"] and "100.0% of pixels agree" in end_to_end[2]["notes"]
    ceiling = next(row for row in report["results"] if row["case"] == "matmul ceiling")
    assert ceiling["ours"]["median"] > 1e9  # FLOP/s of a 256 x 256 matmul


def test_cli_rejects_bad_options_with_one_line(capsys):
    assert eomt(["benchmark", "--sections", "forward,nope"]) == 2
    assert "unknown section 'nope'" in capsys.readouterr().err
    assert eomt(["benchmark", "--train-image-size", "100"]) == 2
    assert "--train-image-size must be a multiple of the patch size 16, got 100" in capsys.readouterr().err
