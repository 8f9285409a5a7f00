"""The `eomt` command: one sub-command per job (`eomt --help` lists them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Command = Callable[[argparse.Namespace], int]


def _quickstart(args: argparse.Namespace) -> int:
    from training.quickstart import run_quickstart

    summary = run_quickstart(args.out, image_size=args.image_size, seed=args.seed)
    print(f"class logits {summary['class_logits_shape']}, mask logits {summary['mask_logits_shape']}, "
          f"forward {summary['forward_seconds'] * 1000:.1f} ms")
    print("pixels per class: " + ", ".join(f"{name} {count}" for name, count in summary["pixels_per_class"].items()))
    print(f"reload identical: {summary['reload_identical']}")
    print(f"wrote {summary['overlay']} and {summary['model_dir']}/")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from training.demo import DemoRecipe, run_ablation, run_demo

    recipe = (DemoRecipe.quick() if args.quick else DemoRecipe()).replace(steps=args.steps, image_size=args.image_size)
    out = Path(args.out)
    if args.ablation:
        run_ablation(out, recipe, seed=args.seed)
        print((out / "ablation.md").read_text())
        print(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
        return 0
    summary = run_demo(out, recipe, seed=args.seed)
    quality, latency, total = summary["pq"], summary["forward_ms_per_image"], summary["timings"]["total"]
    for mode in ("mask-free", "masked"):
        print(f"PQ {quality[mode]['pq']:.1f} ({mode} inference, {latency[mode]:.2f} ms / image)")
    print(f"{total['wall_s'] / 60:.1f} min ({total['cpu_s'] / 60:.1f} CPU min); wrote {out}/: report.md, overlays.png, "
          "loss.png, annealing.png, metrics.json, model/, data/")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from modeling_eomt.conversion import convert_checkpoint

    model = convert_checkpoint(
        args.source, args.output, args.source_format, args.target_format, args.delta_base, args.dataset,
        **conversion_overrides(args),
    )
    config = model.config
    backbone = "DINOv3" if config.position_embedding_type == "rope" else "DINOv2"
    print(
        f"{backbone} ViT: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, {config.num_register_tokens} registers, {config.ffn_type} FFN, "
        f"patch {config.patch_size}, image {config.image_size}; {config.num_queries} queries, "
        f"{config.num_labels} classes, masked attention in the last {config.num_blocks} blocks"
    )
    print(f"wrote {args.output}/ ({args.target_format} format)")
    return 0


def _add_conversion_arguments(parser: argparse.ArgumentParser, original_only: str = "") -> None:
    """The options of `modeling_eomt.conversion.load_checkpoint`: head count and input size of the authors' original
    checkpoints (help prefixed with `original_only`), class names, the base of DINOv3 delta weights."""
    parser.add_argument("--num-heads", type=int,
                        help=f"{original_only}attention heads (default: width / 64, as in DINOv2/DINOv3)")  # fmt: skip
    parser.add_argument("--image-size", type=int,
                        help=f"{original_only}input size (default: the stored grid; 640 for DINOv3)")  # fmt: skip
    parser.add_argument("--dataset", choices=("coco_panoptic", "coco_instance", "ade20k", "cityscapes"), help="class names")
    parser.add_argument("--delta-base", help="the DINOv3 checkpoint the authors' DINOv3 (delta) weights add to")


def conversion_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `EoMTConfig` overrides given with `--num-heads` and `--image-size` (see `_add_conversion_arguments`)."""
    overrides = {"num_attention_heads": args.num_heads, "image_size": args.image_size}
    return {name: value for name, value in overrides.items() if value is not None}


def _train(args: argparse.Namespace) -> int:
    from training.run import train
    from training.settings import TrainSettings

    names = {item.name for item in dataclasses.fields(TrainSettings)}
    values = {name: value for name, value in vars(args).items() if name in names}
    if args.warmup_steps is not None:
        values["head_warmup_steps"], values["backbone_warmup_steps"] = args.warmup_steps
    settings = TrainSettings(**{**values, "model_config": dict(args.model_config)})
    metrics = train(settings)
    if _is_main_process():
        _print_metrics(metrics)
        print(f"wrote {settings.output_dir}/ (model, processor, metrics.json, log_history.json, curves)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.run import evaluate

    metrics = evaluate(
        args.model, args.data, split=args.split, format=args.format, task=args.task, batch_size=args.batch_size,
        workers=args.workers, masked_attention=args.masked_attention, threshold=args.threshold, use_cpu=args.cpu,
        progress=not args.no_progress, output=args.output,
    )  # fmt: skip
    if _is_main_process():
        _print_metrics(metrics)
    return 0


def _is_main_process() -> bool:
    """Rank 0 under `accelerate launch` / `torchrun` (every process runs the command; one prints)."""
    return os.environ.get("RANK", "0") == "0"


def _print_metrics(metrics: dict[str, Any]) -> None:
    """The metrics, one per line, then the panoptic threshold sweep (`eval_pq@t`, ...) as a table."""
    sweep: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        if "@" in name:
            metric, threshold = name.removeprefix("eval_").split("@")
            sweep.setdefault(threshold, {})[metric] = value
        elif isinstance(value, float):
            print(f"{name}: {value:.4g}")
    if sweep:
        print("class-score threshold | PQ | PQ things | PQ stuff")
        for threshold, values in sweep.items():
            row = [f"{values.get(key, float('nan')):.1f}" for key in ("pq", "pq_things", "pq_stuff")]
            print(f"{threshold:>21} | " + " | ".join(row))


def _key_value(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as JSON when it parses (numbers, booleans, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data set folder (COCO panoptic/instance, ADE20K, Cityscapes or "
                        "a datasets save_to_disk folder)")  # fmt: skip
    parser.add_argument("--format", help="layout of --data: coco_panoptic, coco_instance, ade20k, cityscapes or hf_disk "
                        "(detected by default)")  # fmt: skip
    parser.add_argument("--task", choices=("panoptic", "instance", "semantic"), help="task (from the layout by default)")


def _add_train_parser(commands) -> None:
    from training.settings import TrainSettings

    defaults = {item.name: item.default for item in dataclasses.fields(TrainSettings)}
    train = commands.add_parser("train", help="train EoMT on a data set folder", description="Train EoMT with the "
                                "authors' recipe (every setting can be overridden); the data is validated first.")  # fmt: skip

    def option(*flags: str, dest: str, help: str, **kwargs: Any) -> None:
        default = defaults[dest]
        train.add_argument(*flags, dest=dest, default=default, help=f"{help} (default: {default})", **kwargs)

    _add_data_arguments(train)
    train.add_argument("--out", dest="output_dir", required=True, help="output folder (checkpoints, final model, metrics)")
    option("--train-split", dest="train_split", help="training split")
    option("--eval-split", dest="eval_split", help="evaluation split")
    train.add_argument("--no-eval", dest="eval_split", action="store_const", const=None, help="do not evaluate")

    model = train.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", dest="size", choices=("S", "B", "L", "g"), help="size preset (DINOv2 shapes, random weights)")
    model.add_argument("--backbone", help="DINOv2/DINOv3 checkpoint folder or Hub id: pre-trained ViT, new heads")
    model.add_argument("--checkpoint", help="EoMT checkpoint folder or Hub id to fine-tune")
    train.add_argument("--reinitialize-heads", action="store_true", help="new heads for a --checkpoint (other classes)")
    train.add_argument("--model-config", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="EoMTConfig field of a new model, e.g. hidden_size=64 (repeatable)")  # fmt: skip
    option("--image-size", dest="image_size", type=int, help="input side (default: checkpoint's, 640, 512 semantic)")
    option("--num-queries", dest="num_queries", type=int, help="queries of a new model (200, 100 for semantic)")
    option("--num-blocks", dest="num_blocks", type=int, help="masked-attention blocks of a new model (4)")

    option("--weight-decay", dest="weight_decay", type=float, help="AdamW weight decay")
    option("--batch-size", dest="batch_size", type=int, help="training batch size per process")
    option("--eval-batch-size", dest="eval_batch_size", type=int, help="evaluation batch size per process (= batch size)")
    option("--steps", dest="max_steps", type=int, help="optimizer steps (overrides --epochs)")
    option("--epochs", dest="epochs", type=float, help="training epochs")
    _add_recipe_arguments(train, defaults)
    option("--poly-power", dest="poly_power", type=float, help="power of the polynomial lr decay")
    option("--annealing-power", dest="annealing_power", type=float, help="power of the mask-annealing decay")
    option("--annealing-start-steps", dest="annealing_start_steps", type=int, nargs="+", help="per-block start steps "
           "(default: the paper's schedule over the run)")  # fmt: skip
    option("--annealing-end-steps", dest="annealing_end_steps", type=int, nargs="+", help="per-block end steps")
    option("--grad-accum", dest="gradient_accumulation_steps", type=int, help="gradient accumulation steps")
    train.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    train.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    option("--workers", dest="workers", type=int, help="data loading worker processes")
    option("--seed", dest="seed", type=int, help="random seed (weights, augmentation, data order)")
    option("--eval-steps", dest="eval_steps", type=int, help="evaluate every N steps (default: at the end only)")
    option("--save-steps", dest="save_steps", type=int, help="checkpoint every N steps")
    option("--save-total-limit", dest="save_total_limit", type=int, help="checkpoints kept")
    option("--logging-steps", dest="logging_steps", type=int, help="log every N steps")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument("--eval-masked-attention", action="store_true", help="evaluate with masked attention")
    option("--eval-threshold", dest="eval_threshold", type=float, help="class-score threshold of panoptic/instance "
           "evaluation (default: the authors' 0.8 / 0)")  # fmt: skip
    option("--report-to", dest="report_to", help="Trainer integrations (tensorboard, wandb, ...)")
    train.add_argument("--cpu", dest="use_cpu", action="store_true", help="run on the CPU even if a GPU is present")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    train.set_defaults(run=_train)


def _add_recipe_arguments(train: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The recipe options of `eomt train`: unset ones are chosen by `training.recipe.choose_recipe` (printed at
    start-up with the reasons)."""
    recipe = train.add_argument_group("recipe", "unset options are chosen for the start point and the data, and "
                                      "printed with the reason at start-up")  # fmt: skip

    def option(*flags: str, dest: str, help: str, **kwargs: Any) -> None:
        recipe.add_argument(*flags, dest=dest, default=defaults.get(dest), help=f"{help} (default: automatic)", **kwargs)

    recipe.add_argument("--recipe", choices=("auto", "authors", "scratch"), default=defaults["recipe"],
                        help="auto: the authors' recipe for --backbone / --checkpoint, the from-scratch one for --model "
                        "(default: auto)")  # fmt: skip
    option("--lr", dest="learning_rate", type=float, help="peak learning rate")
    option("--layer-decay", dest="layer_decay", type=float, help="layer-wise lr decay (1: none)")
    option("--max-grad-norm", dest="max_grad_norm", type=float, help="gradient clipping norm")
    option("--warmup-steps", dest="warmup_steps", type=int, nargs=2, metavar=("HEAD", "BACKBONE"),
           help="warm-up of the new parameters, then of the backbone")  # fmt: skip
    option("--head-warmup-steps", dest="head_warmup_steps", type=int, help="warm-up of the new parameters")
    option("--backbone-warmup-steps", dest="backbone_warmup_steps", type=int, help="warm-up of the backbone after it")
    option("--augmentation-scale", dest="augmentation_scale", type=float, nargs=2, metavar=("MIN", "MAX"),
           help="large-scale-jitter range, relative to the scale at which an image fits the input")  # fmt: skip
    option("--color-jitter", dest="color_jitter", action=argparse.BooleanOptionalAction, help="colour jitter")
    option("--num-points", dest="num_points", type=int, help="points sampled per mask in the matcher and the loss")
    option("--no-object-weight", dest="no_object_weight", type=float, help="class-loss weight of 'no object'")


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate an EoMT checkpoint on a data set folder (PQ, mask AP or "
                                   "mIoU)")  # fmt: skip
    evaluate.add_argument("model", help="EoMT checkpoint folder or Hub id")
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", default="val", help="split to evaluate (default: val)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="images per batch and process (default: 8)")
    evaluate.add_argument("--workers", type=int, default=2, help="data loading worker processes (default: 2)")
    evaluate.add_argument("--masked-attention", action="store_true", help="run with masked attention in every block")
    evaluate.add_argument("--threshold", type=float, help="class-score threshold of panoptic/instance post-processing "
                          "(default: the authors' 0.8 / 0)")  # fmt: skip
    evaluate.add_argument("--output", help="metrics JSON (default: MODEL/eval_metrics.json for a local MODEL)")
    evaluate.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)


def _predict(args: argparse.Namespace) -> int:
    from training.predict import run_predict

    return run_predict(args)


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="segment image files; write overlays and COCO-format results",
        description="Segment images with an EoMT checkpoint (this package's or transformers' format, or the authors' "
        "original .bin/.ckpt, converted on the fly). Writes OUT/overlays/*.png and OUT/predictions.json, plus "
        "OUT/panoptic/*.png (COCO panoptic PNGs) or OUT/semantic/*.png (class-index PNGs). Exit status: 0 all "
        "images done, 1 some inputs unreadable (the others are done), 2 unusable model, device or option.",
    )
    predict.add_argument("model", help="model directory or Hub id, or the authors' original checkpoint file")
    predict.add_argument("images", nargs="+", help="image files, directories, or glob patterns (quoted)")
    predict.add_argument("--task", choices=("panoptic", "instance", "semantic"), default="panoptic")
    predict.add_argument("--out", default="outputs/predict", help="output directory (default: outputs/predict)")
    predict.add_argument("--recursive", action="store_true", help="also images in sub-directories (and ** in globs)")
    predict.add_argument("--batch-size", type=int, default=1, help="images per forward pass, of any sizes (default: 1)")
    predict.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    predict.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
        help="float32 (default), or autocast to bfloat16 (about 1.6x faster on CPUs with AVX-512 BF16) or float16 "
        "(GPUs; slow on CPU)",
    )  # fmt: skip
    predict.add_argument("--threshold", type=float, default=0.8, help="panoptic, instance: min. score (default: 0.8)")
    predict.add_argument("--mask-threshold", type=float, default=0.5, help="panoptic: mask probability (default: 0.5)")
    predict.add_argument(
        "--overlap-threshold", type=float, default=0.8,
        help="panoptic: fraction of its mask a segment must keep (default: 0.8)",
    )  # fmt: skip
    predict.add_argument(
        "--stuff-classes",
        help="panoptic: class indices fused into one segment per image, comma-separated, or 'none' "
        "(default: the processor's; COCO's for COCO's panoptic classes)",
    )
    _add_conversion_arguments(predict, original_only="original checkpoints: ")
    predict.set_defaults(run=_predict)


def _benchmark(args: argparse.Namespace) -> int:
    from benchmarks.benchmark import run_command

    return run_command(args)


def _add_benchmark_parser(commands) -> None:
    from benchmarks.options import add_benchmark_arguments

    benchmark = commands.add_parser("benchmark", help="time this package's EoMT against transformers' (Markdown + JSON)")
    add_benchmark_arguments(benchmark)
    benchmark.set_defaults(run=_benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eomt", description="EoMT: train, evaluate, run and convert segmentation models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser("quickstart", help="segment a generated image with a small random EoMT (no download)")
    quickstart.add_argument("--out", default="outputs/quickstart", help="output directory")
    quickstart.add_argument("--image-size", type=int, default=128, help="side of the generated image (multiple of 16)")
    quickstart.add_argument("--seed", type=int, default=0)
    quickstart.set_defaults(run=_quickstart)

    demo = commands.add_parser(
        "demo", help="train a small EoMT from scratch on generated data and report PQ (CPU, about 5 minutes)"
    )
    demo.add_argument("--out", default="outputs/demo", help="output directory")
    demo.add_argument("--ablation", action="store_true",
                      help="train three variants (masked attention kept, mask annealing, none) and compare them")  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the initialisation and the augmentation")
    demo.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    demo.add_argument("--image-size", type=int, help="side of the generated images, a multiple of 16")
    demo.add_argument("--quick", action="store_true", help="a run of seconds with a tiny model (for tests)")
    demo.set_defaults(run=_demo)

    convert = commands.add_parser("convert", help="convert the authors' original or transformers' EoMT checkpoints")
    convert.add_argument("source", help="original .bin/.ckpt/.safetensors file, or a checkpoint directory or Hub id")
    convert.add_argument("output", help="output directory")
    convert.add_argument("--from", dest="source_format", default="auto", choices=("auto", "original", "transformers", "ours"))
    convert.add_argument("--to", dest="target_format", default="ours", choices=("ours", "transformers"))
    _add_conversion_arguments(convert)
    convert.set_defaults(run=_convert)

    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_predict_parser(commands)
    _add_benchmark_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; errors about the input (bad data, files, settings) print `error: ...` and return 1."""
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except Exception as error:
        from training.data.base import SampleError

        if args.debug or not isinstance(error, (ValueError, OSError, SampleError)):
            raise
        print(f"error: {_user_message(error)}", file=sys.stderr)
        return 1


def _user_message(error: BaseException) -> str:
    """The message of `error`; for an error re-raised from a DataLoader worker, the original one (its last line)."""
    message = str(error)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


if __name__ == "__main__":
    sys.exit(main())
