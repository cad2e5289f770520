"""The ``matgen`` command line (also ``python cli.py``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from matgen import __version__
from matgen.cli import data as data_cmd
from matgen.cli import demo as demo_cmd
from matgen.cli import evaluate as evaluate_cmd
from matgen.cli import generate as generate_cmd
from matgen.cli import lm as lm_cmd
from matgen.cli import mlff as mlff_cmd
from matgen.cli import screen as screen_cmd

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matgen",
        description="Generative materials and molecular design: generate, relax, screen, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"matgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    data_cmd.add_parser(commands)
    evaluate_cmd.add_parser(commands)
    train = mlff_cmd.add_train_parser(commands)
    generate_cmd.add_train_parser(train)
    lm_cmd.add_train_parser(train)
    generate_cmd.add_parser(commands)
    mlff_cmd.add_parser(commands)
    screen_cmd.add_parser(commands)
    demo_cmd.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from matgen.data.errors import DataError

    try:
        return int(args.run(args) or 0)
    except (DataError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"matgen: error: {message}", file=sys.stderr)
        return 1
