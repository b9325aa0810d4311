"""`stream-fer train COMMAND ...`: the training package's own CLI (`python -m stream_fer.train`; in a clone
of the repository also `python -m train`). Needs the `train` extra (torch)."""

from __future__ import annotations


def register(subparsers) -> None:
    # Listed in `stream-fer --help`; the arguments never reach this parser (cli.main hands them over whole).
    subparsers.add_parser("train", help="train, evaluate and package models (the `train` extra: torch)")


def run_training(argv: list[str]) -> int:
    from stream_fer.train.__main__ import main

    return main(argv, prog="stream-fer train")
