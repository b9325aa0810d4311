"""The `stream-fer` command. Each subcommand lives in its own module and registers itself; heavy
imports (torch, gradio, onnxruntime) happen inside the handlers so `stream-fer --help` stays instant.

`stream-fer INPUT --out OUT.mp4` is short for `stream-fer run INPUT --out OUT.mp4`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys

from stream_fer import __version__
from stream_fer.errors import StreamFerError

# subcommand -> module with register(subparsers)
COMMANDS = {
    "run": "stream_fer.commands.run",
    "models": "stream_fer.commands.models",
    "regions": "stream_fer.commands.regions",
    "export": "stream_fer.engines.commands",
    "build-engine": "stream_fer.engines.commands",
    "serve": "stream_fer.commands.serve",
    "train": "stream_fer.commands.train",
    "summary": "stream_fer.commands.summary",
    "report": "stream_fer.commands.report",
    "batch": "stream_fer.commands.batch",
    "demo": "stream_fer.commands.demo",
}

log = logging.getLogger("stream_fer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-fer",
        description="Real-time, interpretable facial-expression analysis for video.",
        epilog="`stream-fer INPUT --out OUT.mp4` is short for `stream-fer run INPUT --out OUT.mp4`.",
    )
    parser.add_argument("--version", action="version", version=f"stream-fer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for module_name in dict.fromkeys(COMMANDS.values()):
        module = importlib.import_module(module_name)
        module.register(subparsers)
        registered.add(module_name)
    return parser


GLOBAL_FLAGS = ("-v", "-vv", "--verbose", "--debug")


def _with_default_command(argv: list[str]) -> list[str]:
    """Insert `run` before the first argument that is neither a global flag nor a subcommand, so
    `stream-fer in.mp4 --out o.mp4` and `stream-fer --max-faces 2 in.mp4 --out o.mp4` both mean `run`."""
    for i, arg in enumerate(argv):
        if arg in ("-h", "--help", "--version") or arg in COMMANDS:
            return argv
        if arg in GLOBAL_FLAGS:
            continue
        return argv[:i] + ["run"] + argv[i:]
    return argv


def main(argv: list[str] | None = None) -> int:
    """The program (argv None: sys.argv, the process's own command line) or one command in this process."""
    if argv is not None:
        return _main(argv)
    if sys.argv[1:2] != ["train"]:
        # numpy is not loaded yet: OpenBLAS then starts no worker threads, whose spinning after the small
        # matrix products of the analysis cost about 0.5 ms of CPU per frame (benchmarks/RESULTS.md, session 11;
        # stream_fer.pipeline also limits BLAS while it runs, for the API). A user's own setting wins.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        return _main(sys.argv[1:])
    finally:
        # The process ends next, every output already closed: without this, the interpreter's final collections
        # walk every object MediaPipe, OpenCV and ONNX Runtime left (about 0.15 s of CPU at each exit).
        gc.freeze()


def _main(argv: list[str]) -> int:
    argv = _with_default_command(list(argv))
    if argv[:1] == ["train"]:  # the training CLI parses its own arguments, --help included
        from stream_fer.commands.train import run_training

        return run_training(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # Ctrl-C (SIGINT) stops every command cleanly, also when a shell script started the program in the background
    # and so left SIGINT ignored: the app's server and a batch are stopped that way, and end with status 130 below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.handler(args) or 0)
    except StreamFerError as exc:
        if args.debug:
            raise
        _last_words(f"stream-fer: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _last_words("stream-fer: interrupted")
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, with a way to see more
        if args.debug:
            raise
        _last_words(f"stream-fer: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)")
        return 1


def _last_words(line: str) -> None:
    """The line a failing run ends with, on stderr, and delivered whole before the process exits. A landmarker
    still starting in a thread (analyze() starts one before it opens the input) routes fd 2 through a filter pipe
    (stream_fer.landmarks) while MediaPipe writes its start-up chatter, sometimes in pieces: the line is written
    once that landmarker is closed and fd 2 is the real stderr again, so no chatter lands inside it (seen under
    load: 'INFO: stream-fer: error: ...'), and the pipe's pump cannot die with it at exit."""
    in_thread = sys.modules.get("stream_fer.in_thread")
    if in_thread is not None:  # a landmarker abandoned by the failed run: closed now, not at interpreter exit
        in_thread.wait_for_abandoned(5.0)
    landmarks = sys.modules.get("stream_fer.landmarks")  # not imported: no landmarker, no pipe
    if landmarks is not None:
        landmarks.settle_native_stderr()
    print(line, file=sys.stderr, flush=True)
    if landmarks is not None:  # (a landmarker that would not settle in time: the line went through the pipe)
        landmarks.settle_native_stderr()


if __name__ == "__main__":
    sys.exit(main())
