"""The `eomt` command: one module per sub-command (`eomt --help` lists them), their shared helpers in `arguments`.

Each command module has `add_parser(commands)`, which adds its sub-parser, and `run(args) -> exit status`. Building the
parser imports no torch; a command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.commands import benchmark, convert, demo, evaluate, export, predict, quickstart, train
from training.commands.arguments import (
    INPUT_ERROR_STATUS,
    RUN_ERROR_STATUS,
    InputError,
    RunError,
    report_error,
    user_message,
)
from training.launch import end_process_group

COMMANDS = (quickstart, demo, convert, train, evaluate, predict, export, benchmark)  # in the order `eomt --help` lists them


def build_parser() -> argparse.ArgumentParser:
    description = "EoMT: train, evaluate, run and convert segmentation models."
    parser = argparse.ArgumentParser(prog="eomt", description=description)
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; its exit status. Errors print one line, `eomt COMMAND: error: ...` (`--debug`: the traceback):
    a bad option (argparse), model, data set, file or setting (`InputError`, `ValueError`, `OSError`, `SampleError`)
    returns 2, nothing done; a run that stopped part-way (`RunError`) returns 3, with what was kept in the message."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except RunError as error:
        if args.debug:
            raise
        report_error(args.command, str(error))
        return RUN_ERROR_STATUS
    except Exception as error:
        data = sys.modules.get("training.data.base")  # a SampleError needs the data package, which needs `datasets`
        if args.debug or not isinstance(error, (InputError, ValueError, OSError, *((data.SampleError,) if data else ()))):
            raise
        report_error(args.command, user_message(error))
        return INPUT_ERROR_STATUS
    finally:
        end_process_group()
