"""`eomt train`: train EoMT on a data set (`training.run.train`, `TrainSettings`; the recipe from `training.recipe`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from training.commands.arguments import (
    add_data_arguments,
    data_options,
    is_main_process,
    key_value,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    print_metrics,
    probability,
)
from training.settings import TrainSettings


def add_parser(commands: argparse._SubParsersAction) -> None:
    defaults = {item.name: item.default for item in dataclasses.fields(TrainSettings)}
    train = commands.add_parser("train", help="train EoMT on a data set folder", description="Train EoMT with a "
                                "recipe chosen for its start point and data (the authors' for a pre-trained backbone "
                                "or checkpoint, a from-scratch one for random weights; printed with the reasons, every "
                                "setting can be overridden); the data is validated first.")  # fmt: skip

    def option(*flags: str, dest: str, help: str, **kwargs: Any) -> None:
        default = defaults[dest]
        train.add_argument(*flags, dest=dest, default=default, help=f"{help} (default: {default})", **kwargs)

    add_data_arguments(train)
    train.add_argument("--out", dest="output_dir", required=True, help="output folder (checkpoints, final model, metrics)")
    option("--train-split", dest="train_split", help="training split")
    option("--eval-split", dest="eval_split", help="evaluation split")
    train.add_argument("--no-eval", dest="eval_split", action="store_const", const=None, help="do not evaluate")

    model = train.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", dest="size", choices=("S", "B", "L", "g"), help="size preset (DINOv2 shapes, random weights)")
    model.add_argument("--backbone", help="DINOv2/DINOv3 checkpoint folder or Hub id: pre-trained ViT, new heads")
    model.add_argument("--checkpoint", help="EoMT checkpoint folder or Hub id to fine-tune")
    train.add_argument("--reinitialize-heads", action="store_true", help="new heads for a --checkpoint (other classes)")
    train.add_argument("--model-config", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="EoMTConfig field of a new model, e.g. hidden_size=64 (repeatable)")  # fmt: skip
    option("--image-size", dest="image_size", type=positive_int,
           help="input side (default: checkpoint's, 640, 512 semantic)")  # fmt: skip
    option("--num-queries", dest="num_queries", type=positive_int, help="queries of a new model (200, 100 semantic)")
    option("--num-blocks", dest="num_blocks", type=positive_int, help="masked-attention blocks of a new model (4)")

    option("--weight-decay", dest="weight_decay", type=non_negative_float, help="AdamW weight decay")
    option("--batch-size", dest="batch_size", type=positive_int, help="training batch size per process")
    option("--eval-batch-size", dest="eval_batch_size", type=positive_int,
           help="evaluation batch size per process (= batch size)")  # fmt: skip
    option("--steps", dest="max_steps", type=positive_int, help="optimizer steps (overrides --epochs)")
    option("--epochs", dest="epochs", type=positive_float, help="training epochs")
    add_recipe_arguments(train, defaults)
    option("--poly-power", dest="poly_power", type=non_negative_float, help="power of the polynomial lr decay")
    option("--annealing-power", dest="annealing_power", type=non_negative_float, help="power of the annealing decay")
    option("--annealing-start-steps", dest="annealing_start_steps", type=non_negative_int, nargs="+",
           help="per-block start steps (default: the paper's schedule over the run)")  # fmt: skip
    option("--annealing-end-steps", dest="annealing_end_steps", type=non_negative_int, nargs="+",
           help="per-block end steps")  # fmt: skip
    option("--grad-accum", dest="gradient_accumulation_steps", type=positive_int, help="gradient accumulation steps")
    train.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    train.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    option("--workers", dest="workers", type=non_negative_int, help="data loading worker processes")
    option("--seed", dest="seed", type=non_negative_int, help="random seed (weights, augmentation, data order)")
    option("--eval-steps", dest="eval_steps", type=positive_int, help="evaluate every N steps (default: at the end)")
    option("--save-steps", dest="save_steps", type=positive_int, help="checkpoint every N steps")
    option("--save-total-limit", dest="save_total_limit", type=positive_int, help="checkpoints kept")
    option("--logging-steps", dest="logging_steps", type=positive_int, help="log every N steps")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (its schedule "
                       "options must match)")  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    checks = train.add_mutually_exclusive_group()
    checks.add_argument("--skip-validation", dest="validation", action="store_const", const="skip",
                        default=defaults["validation"], help="do not check the data set before training")  # fmt: skip
    checks.add_argument("--full-validation", dest="validation", action="store_const", const="full",
                        default=defaults["validation"], help="check the data set by decoding every record as "
                        "training does (slower)")  # fmt: skip
    option("--max-nonfinite-steps", dest="max_nonfinite_steps", type=positive_int, help="stop after this many "
           "consecutive steps with a NaN or infinite loss or gradient (each is skipped)")  # fmt: skip
    train.add_argument("--eval-masked-attention", action="store_true", help="evaluate with masked attention")
    option("--eval-threshold", dest="eval_threshold", type=probability, help="class-score threshold of "
           "panoptic/instance evaluation, also saved with the model (default: instance 0; panoptic 0.8, then the "
           "class-score and mask-overlap thresholds of the final evaluation's sweep with the best PQ, preferring high "
           "ones)")  # fmt: skip
    option("--report-to", dest="report_to", help="Trainer integrations (tensorboard, wandb, ...)")
    train.add_argument("--cpu", dest="use_cpu", action="store_true", help="run on the CPU even if a GPU is present")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    train.set_defaults(run=run)


def add_recipe_arguments(train: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The recipe options of `eomt train`: unset ones are chosen by `training.recipe.choose_recipe` (printed at
    start-up with the reasons)."""
    recipe = train.add_argument_group("recipe", "unset options are chosen for the start point and the data, and "
                                      "printed with the reason at start-up")  # fmt: skip

    def option(*flags: str, dest: str, help: str, **kwargs: Any) -> None:
        recipe.add_argument(*flags, dest=dest, default=defaults.get(dest), help=f"{help} (default: automatic)", **kwargs)

    recipe.add_argument("--recipe", choices=("auto", "authors", "scratch"), default=defaults["recipe"],
                        help="auto: the authors' recipe for --backbone / --checkpoint, the from-scratch one for --model "
                        "(default: auto)")  # fmt: skip
    option("--lr", dest="learning_rate", type=positive_float, help="peak learning rate")
    option("--layer-decay", dest="layer_decay", type=positive_float, help="layer-wise lr decay (1: none)")
    option("--max-grad-norm", dest="max_grad_norm", type=non_negative_float, help="gradient clipping norm (0: none)")
    option("--warmup-steps", dest="warmup_steps", type=non_negative_int, nargs=2, metavar=("HEAD", "BACKBONE"),
           help="warm-up of the new parameters, then of the backbone")  # fmt: skip
    option("--head-warmup-steps", dest="head_warmup_steps", type=non_negative_int, help="warm-up of the new parameters")
    option("--backbone-warmup-steps", dest="backbone_warmup_steps", type=non_negative_int,
           help="warm-up of the backbone after it")  # fmt: skip
    option("--augmentation-scale", dest="augmentation_scale", type=positive_float, nargs=2, metavar=("MIN", "MAX"),
           help="large-scale-jitter range, relative to the scale at which an image fits the input")  # fmt: skip
    option("--color-jitter", dest="color_jitter", action=argparse.BooleanOptionalAction, help="colour jitter")
    option("--num-points", dest="num_points", type=positive_int, help="points sampled per mask in the matcher and loss")
    option("--no-object-weight", dest="no_object_weight", type=non_negative_float,
           help="class-loss weight of 'no object'")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from training.run import train

    names = {item.name for item in dataclasses.fields(TrainSettings)}
    values = {name: value for name, value in vars(args).items() if name in names}
    if args.warmup_steps is not None:
        values["head_warmup_steps"], values["backbone_warmup_steps"] = args.warmup_steps
    settings = TrainSettings(**{**values, "model_config": dict(args.model_config), **data_options(args)})
    metrics = train(settings)
    if is_main_process():
        print_metrics(metrics)
        print(f"wrote {settings.output_dir}/ (model, processor, metrics.json, log_history.json, curves)")
    return 0
