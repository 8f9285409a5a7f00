"""What the command tests share: running `eomt`, the tiny model and fast recipe of `eomt train`, one-line errors."""

from __future__ import annotations

from training.commands import main

TINY = ["--model", "S", "--model-config", "hidden_size=32", "--model-config", "num_hidden_layers=2",
        "--model-config", "num_attention_heads=2", "--model-config", "num_register_tokens=0", "--num-queries", "6",
        "--num-blocks", "2", "--image-size", "32"]  # fmt: skip
FAST = ["--batch-size", "2", "--lr", "1e-3", "--head-warmup-steps", "1", "--backbone-warmup-steps", "1",
        "--workers", "0", "--cpu", "--no-progress", "--logging-steps", "1"]  # fmt: skip


def run_cli(*argv) -> int:
    return main([str(arg) for arg in argv])


def assert_error(capsys, *argv, expected: str, status: int = 2) -> str:
    """`eomt *argv` fails with exit status `status` (2: bad input, nothing done; 3: stopped part-way) and one
    `eomt COMMAND: error: ...` line on stderr containing `expected`, no traceback."""
    capsys.readouterr()  # what came before
    assert run_cli(*argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith(f"eomt {argv[0]}: error: ") and expected in captured.err, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err
