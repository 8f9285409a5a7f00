"""The model card (`README.md`) written beside every saved EoMT model: Hub metadata (`library_name`, `pipeline_tag`,
tags, base model, data set, evaluation results as `model-index`), what the model is, how it was trained, and how to use
it with and without this package installed.

What the card says about training comes from `config.training_summary` (see `EoMTConfig`), which the training code
fills (`EoMTTrainer`, `eomt train`); a model built from a config alone gets the architecture and usage sections.
A `README.md` that this module did not write (a user's own) is never overwritten.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# The first line of the body of every card written here: how a generated card is told from a user's own.
MARKER = "<!-- model card written by eomt-transformers; edit freely (then it is no longer replaced) -->"
# transformers' placeholder card (`create_and_tag_model_card`), which a generated card may replace.
TRANSFORMERS_PLACEHOLDER = "This model card has been automatically generated."
# Metric names of the evaluation (`EoMTTrainer.evaluate`, without the `eval_` prefix) -> model-index metric name.
METRIC_NAMES = {
    "pq": "PQ", "sq": "SQ", "rq": "RQ", "pq_things": "PQ (things)", "pq_stuff": "PQ (stuff)", "ap": "mask AP",
    "ap50": "mask AP50", "ap75": "mask AP75", "miou": "mIoU", "pixel_accuracy": "pixel accuracy",
}  # fmt: skip
TASK_TAGS = {"panoptic": "panoptic-segmentation", "instance": "instance-segmentation", "semantic": "semantic-segmentation"}


def is_hub_id(name: Any) -> bool:
    """Whether `name` reads as a Hub repo id (`owner/name` or `name`) rather than a local path."""
    if not isinstance(name, str) or not name or os.path.exists(name):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None and not name.endswith((".", "-"))


def is_generated(text: str) -> bool:
    """Whether a card's text was written here (or is transformers' placeholder), so that it may be replaced."""
    return MARKER in text or TRANSFORMERS_PLACEHOLDER in text


def card_data(config: Any) -> ModelCardData:
    """The card's metadata for a model `config` (an `EoMTConfig`)."""
    summary = dict(getattr(config, "training_summary", None) or {})
    dataset = dict(summary.get("dataset") or {})
    task = dataset.get("task")
    tags = ["eomt", "vision", "image-segmentation", "custom_code"] + ([TASK_TAGS[task]] if task in TASK_TAGS else [])
    base_model = summary.get("base_model")
    dataset_id = dataset.get("name")
    results = []
    for key, value in sorted((summary.get("eval_results") or {}).items()):
        if key in METRIC_NAMES and isinstance(value, (int, float)):
            results.append(EvalResult(
                task_type="image-segmentation", task_name=f"{task or 'image'} segmentation",
                dataset_type=dataset_id or "custom", dataset_name=dataset_id or "custom",
                dataset_split=dataset.get("eval_split"), metric_type=key, metric_name=METRIC_NAMES[key],
                metric_value=round(float(value), 4),
            ))  # fmt: skip
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=tags,
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[dataset_id] if is_hub_id(dataset_id) else None,
        model_name=summary.get("model_name") or "EoMT",
        eval_results=results or None,
    )


def _architecture(config: Any) -> str:
    backbone = "DINOv3" if config.position_embedding_type == "rope" else "DINOv2"
    names = [config.id2label[index] for index in sorted(config.id2label)]
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return (
        f"EoMT (Encoder-only Mask Transformer, \"Your ViT is Secretly an Image Segmentation Model\", CVPR 2025): a "
        f"{backbone}-style ViT (hidden size {config.hidden_size}, {config.num_hidden_layers} blocks, patch "
        f"{config.patch_size}, input {config.image_size}x{config.image_size}) whose last {config.num_blocks} blocks "
        f"also carry {config.num_queries} queries that predict masks and classes. {config.num_labels} classes: {shown}."
    )


def _training(summary: dict[str, Any]) -> str:
    lines = []
    if summary.get("base_model"):
        lines.append(f"- started from: `{summary['base_model']}`")
    dataset = summary.get("dataset") or {}
    if dataset.get("name"):
        split = f" (split `{dataset['train_split']}`)" if dataset.get("train_split") else ""
        lines.append(f"- data: `{dataset['name']}`{split}, {dataset.get('task', '?')} segmentation")
    for key, value in (summary.get("recipe") or {}).items():
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    results = summary.get("eval_results") or {}
    if results:
        split = f" on `{dataset['eval_split']}`" if dataset.get("eval_split") else ""
        shown = ", ".join(f"{METRIC_NAMES.get(key, key)} {value:.4g}" for key, value in results.items()
                          if isinstance(value, (int, float)))  # fmt: skip
        lines.append(f"- evaluation{split}: {shown}")
    return "\n".join(lines)


USAGE = '''With this package installed (`pip install eomt-transformers`):

```python
import modeling_eomt  # registers EoMT with transformers' Auto classes
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{repo}")
segments = segmenter("image.jpg", subtask="{subtask}")
```

With transformers alone: this folder carries the model's code (`auto_map` in `config.json`), run with
`trust_remote_code=True`:

```python
from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation, pipeline

segmenter = pipeline("image-segmentation", model="{repo}", trust_remote_code=True)
model = AutoModelForUniversalSegmentation.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo}", trust_remote_code=True)
```'''


def model_card(config: Any, repo: str | None = None) -> ModelCard:
    """The card of a model with `config`; `repo` (Hub id or folder) goes into the usage snippets."""
    summary = dict(getattr(config, "training_summary", None) or {})
    task = (summary.get("dataset") or {}).get("task") or "panoptic"
    sections = [MARKER, f"# {summary.get('model_name') or 'EoMT'}", _architecture(config)]
    training = _training(summary)
    if training:
        sections += ["## Training", training]
    sections += ["## Usage", USAGE.format(repo=repo or "path/to/this/folder", subtask=task)]
    return ModelCard(f"---\n{card_data(config).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def write_model_card(config: Any, directory: str | os.PathLike, repo: str | None = None) -> Path | None:
    """Write the card to `directory/README.md` unless a README there is a user's own (then it is kept, with a
    warning). Returns the path written, or None."""
    path = Path(directory) / CARD_NAME
    if path.is_file() and not is_generated(path.read_text(encoding="utf-8", errors="replace")):
        logger.warning("%s was not written by eomt-transformers: kept as it is (no model card written)", path)
        return None
    model_card(config, repo or str(directory)).save(path)
    return path
