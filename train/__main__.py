"""`python -m train COMMAND` (in a clone), `python -m stream_fer.train COMMAND` or `stream-fer train COMMAND`:
landmarks | fit | eval | template | package | trust | ablation."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stream_fer.errors import StreamFerError


def _landmarks(args) -> int:
    from stream_fer.train.landmarks import build_cache

    cache = build_cache(args.out, args.data, workers=args.workers, model_path=args.landmarker)
    n, found = len(cache.found), int(cache.found.sum())
    print(f"landmarks: {found}/{n} faces found ({100 * found / n:.1f}%); {n - found} recorded as not found")
    return 0


def build_parser(prog: str = "python -m train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train stream-fer models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lm = sub.add_parser("landmarks", help="precompute MediaPipe landmarks for every FER+ image (resumable)")
    lm.add_argument("--data", help="ferplus.tar.gz or its extracted folder (default: STREAM_FER_FERPLUS)")
    lm.add_argument("--out", type=Path, help="cache file (default: the user cache)")
    lm.add_argument("--workers", type=int, default=2)
    lm.add_argument("--landmarker", help="face_landmarker.task (default: the fetched one)")
    lm.set_defaults(handler=_landmarks)
    for register in _command_modules():
        register(sub)
    return parser


def _command_modules():
    import importlib

    for name in ("fit", "evaluate", "template", "package", "trust", "ablation"):
        try:
            yield importlib.import_module(f"stream_fer.train.{name}").register
        except ModuleNotFoundError as exc:  # a module not written yet must not block the others
            if exc.name != f"stream_fer.train.{name}":
                raise


def main(argv=None, prog: str = "python -m train") -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except StreamFerError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted (progress so far is saved; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
