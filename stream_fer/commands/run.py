"""`stream-fer run INPUT --out OUT.mp4`: annotate a video file, RTSP stream, webcam or still image.

INPUT is a video file (anything FFmpeg decodes), an rtsp:// URL, a webcam index (0, 1, ...) or an image.
Outputs: an annotated video (same frame count and timing as a file input, audio copied) or image, and
per-frame rows as CSV and/or JSON Lines. At least one output is required. A live input runs until Ctrl-C
(or --max-frames); Ctrl-C always leaves playable, complete-up-to-there outputs.

Order of work, so bad input fails fast and cheaply: output paths are checked, then the input is opened,
then the outputs are opened, and only then are the models loaded.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

# as engines.select.BACKENDS (not imported here: `--help` stays instant)
BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "torch-cpu", "onnxruntime", "onnxruntime-cuda",
            "onnxruntime-cpu")
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
    model = parser.add_argument_group("model")
    model.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    model.add_argument("--model", metavar="DIR", help="exported model folder (default: the shipped model)")
    model.add_argument("--threads", type=int, default=1, metavar="N",
                       help="CPU inference threads (default: 1; the pipeline's other stages use the other cores)")
    model.add_argument("--landmarker", metavar="PATH", help="face_landmarker.task (default: resolved and verified)")
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--max-faces", type=int, default=1, metavar="N", help="faces per frame (default: 1)")
    analysis.add_argument("--smoothing", default="ema", metavar="NAME",
                          help="temporal smoothing: none, ema, window, one_euro (default: ema)")
    analysis.add_argument("--smoothing-strength", type=float, default=0.6, metavar="X",
                          help="0 (none) to 1 (strongest); default 0.6")
    overlays = parser.add_argument_group("overlays")
    for name, what in OVERLAYS.items():
        overlays.add_argument(f"--no-{name.replace('_', '-')}", dest=f"no_{name}", action="store_true",
                              help=f"do not draw {what}")
    overlays.add_argument("--panel", action="store_true", help="add the explanation panel of the largest face")
    video = parser.add_argument_group("input and encoding")
    video.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    video.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    video.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default: 23)")
    video.add_argument("--preset", default="superfast", help="x264 speed preset (default: superfast)")
    video.add_argument("--reconnect", type=int, default=5, metavar="N",
                       help="RTSP: reconnect attempts after the stream drops (default: 5)")
    video.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_fer.errors import StreamFerError
    from stream_fer.sinks import IMAGE_SUFFIXES, check_writable
    from stream_fer.sources import open_source

    if not (args.out or args.csv or args.jsonl):
        raise StreamFerError("nothing to write: give --out, --csv and/or --jsonl")
    if args.max_faces < 1:
        raise StreamFerError("--max-faces must be at least 1")
    if args.threads < 1:
        raise StreamFerError("--threads must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise StreamFerError("--max-frames must be at least 1")
    outputs = [p for p in (args.out, args.csv, args.jsonl) if p]
    if len({str(Path(p).resolve()) for p in outputs}) != len(outputs):
        raise StreamFerError("--out, --csv and --jsonl must be different files")
    input_path = Path(args.input)
    for p in outputs:
        if input_path.exists() and Path(p).resolve() == input_path.resolve():
            raise StreamFerError(f"refusing to overwrite the input {args.input}")
        check_writable(p)

    source_options = {"reconnect_attempts": args.reconnect} if args.input.lower().startswith("rtsp") else {}
    source = open_source(args.input, **source_options)
    source.open()
    sinks: list = []
    try:
        sinks = _open_sinks(args, source.info, IMAGE_SUFFIXES)
        analyzer = _make_analyzer(args, image=source.info.codec == "image")
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    print(f"stream-fer: {source.info.description} -> {', '.join(str(p) for p in outputs)}", file=sys.stderr,
          flush=True)

    from stream_fer.pipeline import run_pipeline

    try:
        stats = run_pipeline(source, analyzer, sinks, progress=not args.no_progress, max_frames=args.max_frames)
    finally:
        analyzer.close()
    print("\n".join(stats.summary_lines()))
    if stats.interrupted:
        raise KeyboardInterrupt
    return 0


def _open_sinks(args, info, image_suffixes) -> list:
    from pathlib import Path

    from stream_fer.errors import StreamFerError
    from stream_fer.records import ROW_FIELDS, to_row
    from stream_fer.sinks import CsvSink, ImageSink, JsonlSink, VideoSink

    sinks: list = []
    try:
        if args.out:
            if Path(args.out).suffix.lower() in image_suffixes:
                if info.codec != "image":
                    raise StreamFerError(f"--out {args.out} is an image name but the input is a video; use .mp4")
                sinks.append(ImageSink(args.out))
            else:
                sinks.append(VideoSink(args.out, info, copy_audio=not args.no_audio, crf=args.crf,
                                       preset=args.preset))
        if args.csv:
            sinks.append(CsvSink(args.csv, ROW_FIELDS, to_row))
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl, to_row))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _make_analyzer(args, image: bool):
    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.render import OverlayOptions
    from stream_fer.smoothing import make_smoother

    make_smoother(args.smoothing, args.smoothing_strength)  # a bad name or strength fails before the model loads
    overlays = OverlayOptions(**{name: not getattr(args, f"no_{name}") for name in OVERLAYS}, panel=args.panel)
    from stream_fer.engines.select import load_engine

    engine = load_engine(args.model, backend=args.backend, threads=args.threads,
                         report=lambda line: print(f"stream-fer: {line}", file=sys.stderr, flush=True))
    return FrameAnalyzer(engine, landmarker_path=args.landmarker, max_faces=args.max_faces,
                         smoothing=args.smoothing, smoothing_strength=args.smoothing_strength, overlays=overlays,
                         mode="image" if image else "video")
