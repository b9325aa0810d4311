"""`stream-fer demo --out annotated.mp4`: the main job (`stream-fer run`) on the sample clip shipped inside the
package, so a fresh install shows what stream-fer does without any data of its own. It says where the sample
is; `stream-fer demo --path` only prints that path (for `stream-fer run "$(stream-fer demo --path)" ...`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="annotate the sample clip shipped with stream-fer (needs no data)",
        description="Annotate the 4-second sample clip shipped inside the package (video by Wolfgang Langer "
                    "from Pexels), exactly as `stream-fer run SAMPLE --out OUT` would.")
    parser.add_argument("--out", "-o", default="annotated.mp4", metavar="OUT",
                        help="annotated video (default: annotated.mp4)")
    parser.add_argument("--csv", metavar="FILE", help="per-face, per-frame rows as CSV")
    parser.add_argument("--jsonl", metavar="FILE", help="per-face, per-frame rows as JSON Lines")
    parser.add_argument("--parquet", metavar="FILE", help="per-face, per-frame rows as Parquet (typed)")
    parser.add_argument("--report", metavar="FILE", help="a self-contained HTML report")
    parser.add_argument("--backend", default="auto", help="inference backend (default: auto)")
    parser.add_argument("--max-faces", default="1", metavar="N", help="faces per frame (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--path", action="store_true", help="print the sample clip's path and exit")
    parser.set_defaults(handler=_demo)


def _run_args(argv: list[str]) -> argparse.Namespace:
    """`stream-fer run ARGV` parsed by the run command's own parser (its defaults, its checks)."""
    from stream_fer.commands import run

    parser = argparse.ArgumentParser(prog="stream-fer")
    run.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def _demo(args: argparse.Namespace) -> int:
    from stream_fer.samples import SAMPLE_CREDIT, sample_video

    sample = sample_video()
    if args.path:
        print(sample)
        return 0
    argv = [str(sample), "--out", args.out, "--backend", args.backend, "--max-faces", args.max_faces]
    for flag, value in (("--csv", args.csv), ("--jsonl", args.jsonl), ("--parquet", args.parquet),
                        ("--report", args.report)):
        if value:
            argv += [flag, value]
    if args.no_progress:
        argv.append("--no-progress")
    print(f"stream-fer: demo on the sample clip {sample} ({SAMPLE_CREDIT})", file=sys.stderr, flush=True)
    run_args = _run_args(argv)
    return int(run_args.handler(run_args) or 0)
