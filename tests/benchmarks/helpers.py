"""What the benchmark tests share: a tiny ViT and the benchmark's options."""

import argparse

from benchmarks.options import add_benchmark_arguments

# A tiny ViT (transformers' EoMT derives the FFN width from mlp_ratio, so that stays at 4).
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2)


def parse(*argv: str) -> argparse.Namespace:
    """The options of `eomt benchmark *argv`."""
    return add_benchmark_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def run_tiny_section(name: str, *options: str) -> list:
    """The results of section `name` on a tiny ViT and 32-pixel inputs, two timed rounds, one thread."""
    from benchmarks.runner import run_benchmark

    tiny = ["--image-size", "32", "--queries", "5", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    return run_benchmark(parse("--sections", name, *tiny, *options), config_overrides=TINY)
