"""`eomt benchmark`: speed and memory of this package's EoMT against transformers' (`benchmarks`; Markdown + JSON).

The only command that imports `benchmarks`: its options when the parser is built (`benchmarks.options`, no torch),
the sections when `--help` lists them or the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.options import add_benchmark_arguments
from training.commands.arguments import InputError, resolve_device


class HelpWithSections(argparse.Action):
    """`-h/--help` that lists the sections (importing them: torch and the models) before printing the help."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from benchmarks.registry import describe_sections

        parser.epilog = describe_sections()
        parser.print_help()
        parser.exit()


def add_parser(commands: argparse._SubParsersAction) -> None:
    help = "time this package's EoMT against transformers' (Markdown + JSON)"
    parser = commands.add_parser(
        "benchmark", help=help, description=help[0].upper() + help[1:] + ".", add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("-h", "--help", action=HelpWithSections, help="show this help and the sections, and exit")
    add_benchmark_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.runner import check_arguments, run_benchmark

    resolve_device(args.device)
    try:
        check_arguments(args)
    except ValueError as error:
        raise InputError(str(error)) from None
    run_benchmark(args)
    return 0
