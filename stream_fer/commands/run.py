"""`stream-fer run INPUT --out OUT.mp4`: annotate a video file, RTSP stream, webcam or still image.

INPUT is a video file (anything FFmpeg decodes), an rtsp:// URL, a webcam index (0, 1, ...) or an image.
Outputs: an annotated video (same frame count and timing as a file input, audio copied) or image,
per-frame rows as CSV, JSON Lines and/or Parquet, and an HTML report. At least one output is required.
A live input runs until Ctrl-C (or --max-frames); Ctrl-C always leaves playable, complete-up-to-there
outputs.

The work is stream_fer.analyze's (the same function the Python API and batch use). Its order, so bad
input fails fast and cheaply: output paths are checked, then the input is opened, then the outputs are
opened, and only then are the models loaded.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

log = logging.getLogger(__name__)

# as engines.select.BACKENDS (not imported here: `--help` stays instant)
BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "torch-cpu", "onnxruntime", "onnxruntime-cuda",
            "onnxruntime-cpu", "onnxruntime-int8")
# as stream_fer.sinks.DEFAULT_PRESET (not imported here either)
DEFAULT_PRESET = "ultrafast"
OVERLAYS = {"box": "the face box", "label": "the label and its probability", "bars": "the probability bars",
            "attention": "the attention heatmap", "au_regions": "the AU regions and their names"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="annotate a video file, rtsp:// stream, webcam index or image",
        description="Annotate a video file, an rtsp:// stream, a webcam (an index such as 0) or an image with "
                    "facial expressions and their explanations; write the annotated video and/or per-frame "
                    "data.")
    parser.add_argument("input", help="video file, rtsp:// URL, webcam index, or image file")
    out = parser.add_argument_group("outputs (at least one)")
    out.add_argument("--out", "-o", metavar="OUT", help="annotated video (.mp4, .mov, .mkv) or image (.png, .jpg)")
    out.add_argument("--csv", metavar="FILE", help="per-face, per-frame rows as CSV")
    out.add_argument("--jsonl", metavar="FILE", help="per-face, per-frame rows as JSON Lines")
    out.add_argument("--parquet", metavar="FILE", help="per-face, per-frame rows as Parquet (typed columns, with "
                     "the model hash and settings in the file metadata)")
    out.add_argument("--report", metavar="FILE", help="a self-contained HTML report: per track a timeline, "
                     "expression shares and key frames with their explanations (needs matplotlib)")
    model = parser.add_argument_group("model")
    model.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    model.add_argument("--model", metavar="DIR", help="exported model folder (default: the shipped model)")
    model.add_argument("--threads", type=int, default=1, metavar="N",
                       help="CPU inference threads (default: 1; the pipeline's other stages use the other cores)")
    model.add_argument("--landmarker", metavar="PATH", help="face_landmarker.task (default: resolved and verified)")
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--max-faces", type=int, default=1, metavar="N", help="faces per frame (default: 1)")
    analysis.add_argument("--min-face", type=float, default=40, metavar="PX",  # stream_fer.api.DEFAULT_MIN_FACE
                          help="smallest face height to look for, in pixels (default: 40; faces under about a "
                               "sixth of the frame are searched for in tiles, at no cost while --max-faces faces "
                               "are in view; 0: the whole-frame detector only)")
    analysis.add_argument("--smoothing", default="ema", metavar="NAME",
                          help="temporal smoothing: none, ema, window, one_euro (default: ema)")
    analysis.add_argument("--smoothing-strength", type=float, default=0.6, metavar="X",
                          help="0 (none) to 1 (strongest); default 0.6")
    analysis.add_argument("--no-mirror", action="store_true",
                          help="read each face alone, not averaged with its mirror image: half the model's work "
                               "per face, lower accuracy (model card), trust without its mirror evidence")
    analysis.add_argument("--mirror-below", type=float, default=None, metavar="P",
                          help="read a face's mirror image too where the crop alone gives the top label a "
                               "probability below P (default 0.7, which gives every FER+ validation face the label "
                               "of reading them all; 1: every face)")
    overlays = parser.add_argument_group("overlays")
    for name, what in OVERLAYS.items():
        overlays.add_argument(f"--no-{name.replace('_', '-')}", dest=f"no_{name}", action="store_true",
                              help=f"do not draw {what}")
    overlays.add_argument("--panel", action="store_true", help="add the explanation panel of the largest face")
    video = parser.add_argument_group("input and encoding")
    video.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    video.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    video.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default: 23)")
    video.add_argument("--preset", default=DEFAULT_PRESET,
                       help=f"x264 speed preset (default: {DEFAULT_PRESET}: the least CPU; superfast or slower "
                            "make smaller files for more CPU)")
    video.add_argument("--reconnect", type=int, default=5, metavar="N",
                       help="RTSP: reconnect attempts after the stream drops (default: 5)")
    video.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)


def _collect_again() -> None:
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _run(args: argparse.Namespace) -> int:
    """The command is stream_fer.analyze with the flags as its options (one code path for the CLI, the API
    and batch); only the flag-named usage checks live here.

    Start-up (imports; MediaPipe's, ONNX Runtime's and x264's set-up) allocates much and frees little: the
    cyclic collector's passes over it cost about 50 ms of CPU on the way to the first frame. It is off from
    here until the analysis begins, and what start-up made is then frozen (later passes skip it)."""
    gc.disable()
    try:
        return _analyze(args)
    finally:
        _collect_again()


def _analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    import stream_fer
    from stream_fer.api import AnalysisInterrupted
    from stream_fer.errors import StreamFerError

    outputs = {"--out": args.out, "--csv": args.csv, "--jsonl": args.jsonl, "--parquet": args.parquet,
               "--report": args.report}
    given = {flag: p for flag, p in outputs.items() if p}
    if not given:
        raise StreamFerError("nothing to write: give --out, --csv, --jsonl, --parquet and/or --report")
    if args.max_faces < 1:
        raise StreamFerError("--max-faces must be at least 1")
    if not args.min_face >= 0:
        raise StreamFerError("--min-face must be a face height in pixels >= 0 (0: no small-face search)")
    if args.threads < 1:
        raise StreamFerError("--threads must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise StreamFerError("--max-frames must be at least 1")
    if len({str(Path(p).resolve()) for p in given.values()}) != len(given):
        raise StreamFerError(f"{', '.join(given)} must be different files")

    def announce(line: str) -> None:
        print(f"stream-fer: {line}", file=sys.stderr, flush=True)
        if " -> " in line:  # the last start-up line: the analysis begins
            _collect_again()

    overlays = {name: not getattr(args, f"no_{name}") for name in OVERLAYS}
    try:
        res = stream_fer.analyze(
            args.input, out=args.out, csv=args.csv, jsonl=args.jsonl, parquet=args.parquet, report=args.report,
            max_faces=args.max_faces, smoothing=args.smoothing, smoothing_strength=args.smoothing_strength,
            backend=args.backend, model=args.model, threads=args.threads, landmarker=args.landmarker,
            overlays={**overlays, "panel": args.panel}, max_frames=args.max_frames, audio=not args.no_audio,
            progress=not args.no_progress, reconnect=args.reconnect, crf=args.crf, preset=args.preset,
            announce=announce, min_face=args.min_face, mirror=not args.no_mirror,
            **({} if args.mirror_below is None else {"mirror_below": args.mirror_below}),
            keep_rows=False)  # the files are the output
    except AnalysisInterrupted as stop:
        print("\n".join(stop.results.stats.summary_lines()))
        raise KeyboardInterrupt from None
    print("\n".join(res.stats.summary_lines()))
    return 0
