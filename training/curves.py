"""Training curves as PNG from a `Trainer` log history: losses, mask-annealing probabilities, evaluation metrics."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOSS_COMPONENTS = ("loss_mask", "loss_dice", "loss_cross_entropy")
_ANNEALING_KEY = re.compile(r"attn_mask_prob_(\d+)$")
_EVAL_METRICS = ("eval_pq", "eval_pq_things", "eval_pq_stuff", "eval_ap", "eval_ap50", "eval_miou")


def series(log_history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """`(steps, values)` of every log record that holds `key`."""
    records = [record for record in log_history if key in record and "step" in record]
    return [int(record["step"]) for record in records], [float(record[key]) for record in records]


def _plot(path: Path, title: str, ylabel: str, lines: dict[str, tuple[list[int], list[float]]], **axes: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, (steps, values) in lines.items():
        ax.plot(steps, values, label=label, linewidth=2.0 if label in ("loss", "eval_pq") else 1.2,
                marker="o" if len(steps) < 20 else None, markersize=3)  # fmt: skip
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel, **axes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike) -> list[Path]:
    """Write `loss.png` (total training loss, its final-prediction components and `eval_loss`), `annealing.png`
    (`attn_mask_prob_{i}` per masked block) and `eval_metrics.png` (PQ / AP / mIoU) for what the history holds;
    returns the files written."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    losses = {key: series(log_history, key) for key in ("loss", *LOSS_COMPONENTS, "eval_loss")}
    losses = {key: line for key, line in losses.items() if line[0]}
    if losses:
        written.append(_plot(output_dir / "loss.png", "training loss", "loss", losses, yscale="log"))
    block_keys = sorted({key for record in log_history for key in record if _ANNEALING_KEY.match(key)},
                        key=lambda key: int(_ANNEALING_KEY.match(key).group(1)))  # fmt: skip
    if block_keys:
        lines = {key.replace("attn_mask_prob_", "block "): series(log_history, key) for key in block_keys}
        written.append(_plot(output_dir / "annealing.png", "mask annealing", "masked-attention probability", lines,
                             ylim=(-0.05, 1.05)))  # fmt: skip
    metrics = {key: series(log_history, key) for key in _EVAL_METRICS}
    metrics = {key: line for key, line in metrics.items() if line[0]}
    if metrics:
        written.append(_plot(output_dir / "eval_metrics.png", "evaluation", "percent", metrics))
    return written
