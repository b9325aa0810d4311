"""`stream-fer batch INPUT... --out-dir DIR`: analyse many videos, on this machine's cores or on Ray.

INPUT: any mix of video files, folders (searched recursively), glob patterns and manifests (a text file of
paths, or a CSV with a `path` column). Per video, under DIR at its path relative to the inputs' common root:
per-frame Parquet (and CSV/JSONL on request), a summary JSON, the annotated video with --video. At the end
DIR/batch.csv (one row per video) and DIR/batch.parquet (all videos' rows, a `video` column). Rerunning the
same command resumes: finished videos are skipped, unfinished ones redone.
"""

from __future__ import annotations

import argparse
import sys

from stream_fer.commands.run import BACKENDS

LOCAL_RAY = "local"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="analyse many videos (local process pool, or Ray), resumable",
        description="Analyse many videos: per-frame data (Parquet, optionally CSV/JSONL), a summary and optionally "
                    "the annotated video per input, plus DIR/batch.csv and DIR/batch.parquet for the whole batch. "
                    "Runs on a local process pool (one worker per core) or on Ray. Rerun the same command to "
                    "resume: finished videos are skipped.",
        epilog="Examples: stream-fer batch recordings/ --out-dir results/ ; stream-fer batch 'data/**/*.mp4' "
               "--out-dir results/ --workers 4 ; stream-fer batch list.csv --out-dir /shared/results --ray=auto ; "
               "on SLURM: stream-fer batch list.txt --out-dir results/ --shard $SLURM_ARRAY_TASK_ID/16")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video file, folder (searched recursively), glob pattern (quote it), or manifest "
                             "(.txt of paths, or .csv with a 'path' column)")
    parser.add_argument("--out-dir", "-o", required=True, metavar="DIR", help="where every output goes")
    out = parser.add_argument_group("outputs per video (Parquet and a summary JSON always)")
    out.add_argument("--csv", action="store_true", help="also the per-frame rows as CSV")
    out.add_argument("--jsonl", action="store_true", help="also the per-frame rows as JSON Lines")
    out.add_argument("--video", action="store_true", help="also the annotated video (much slower)")
    out.add_argument("--no-audio", action="store_true", help="do not copy the audio into the annotated video")
    run = parser.add_argument_group("where it runs")
    run.add_argument("--workers", type=int, metavar="N",
                     help="local worker processes (default: one per core); with --ray and no address, the CPUs "
                          "of the local Ray")
    run.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                     help="run as Ray tasks: no address starts a local Ray, 'auto' or host:port joins a cluster "
                          "(write it after the inputs, or as --ray=ADDRESS); needs pip install 'stream-fer[ray]' "
                          "and DIR on a filesystem every node shares")
    run.add_argument("--shard", metavar="K/N", help="only the K-th of N deterministic slices of the inputs "
                                                    "(for scheduler job arrays; K from 1 to N)")
    run.add_argument("--force", action="store_true", help="redo every video, finished or not")
    run.add_argument("--retry-failed", action="store_true", help="redo the videos that failed before")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    model = parser.add_argument_group("model and analysis (as for `stream-fer run`)")
    model.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    model.add_argument("--model", metavar="DIR", help="exported model folder (default: the shipped model)")
    model.add_argument("--landmarker", metavar="PATH", help="face_landmarker.task (default: resolved and verified)")
    model.add_argument("--max-faces", type=int, default=1, metavar="N", help="faces per frame (default: 1)")
    model.add_argument("--min-face", type=float, default=40, metavar="PX",
                       help="smallest face height to look for, in pixels (default: 40; 0: the whole-frame "
                            "detector only)")
    model.add_argument("--smoothing", default="ema", metavar="NAME",
                       help="temporal smoothing: none, ema, window, one_euro (default: ema)")
    model.add_argument("--smoothing-strength", type=float, default=0.6, metavar="X",
                       help="0 (none) to 1 (strongest); default 0.6")
    model.add_argument("--max-frames", type=int, metavar="N", help="only the first N frames of each video")
    model.add_argument("--no-mirror", action="store_true",
                       help="read each face alone, not averaged with its mirror image (half the model's work per face)")
    model.add_argument("--mirror-below", type=float, default=None, metavar="P",
                       help="read a face's mirror image too where the crop alone gives the top label a probability "
                            "below P (default 0.7; 1: every face)")
    parser.set_defaults(handler=_batch)


def _batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_fer.batch import BatchOptions, BatchSettings, Shard, discover, run_batch
    from stream_fer.batch.runner import videos_text
    from stream_fer.errors import StreamFerError
    from stream_fer.smoothing import make_smoother

    if args.max_faces < 1:
        raise StreamFerError("--max-faces must be at least 1")
    if not args.min_face >= 0:
        raise StreamFerError("--min-face must be a face height in pixels >= 0 (0: no small-face search)")
    if args.max_frames is not None and args.max_frames < 1:
        raise StreamFerError("--max-frames must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise StreamFerError("--workers must be at least 1")
    if args.ray is not None and args.ray != LOCAL_RAY and args.workers is not None:
        raise StreamFerError("--workers sizes a local pool or a local Ray; a Ray cluster uses all its CPUs")
    make_smoother(args.smoothing, args.smoothing_strength)  # a bad name fails before any worker starts
    if args.mirror_below is not None:
        from stream_fer.reading import check_mirror_below

        check_mirror_below(args.mirror_below)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StreamFerError(f"--out-dir {out_dir} is a file, not a folder")
    settings = BatchSettings(max_faces=args.max_faces, min_face=args.min_face, smoothing=args.smoothing,
                             smoothing_strength=args.smoothing_strength, backend=args.backend, model=args.model,
                             landmarker=args.landmarker, max_frames=args.max_frames, csv=args.csv, jsonl=args.jsonl,
                             video=args.video, audio=not args.no_audio, mirror=not args.no_mirror,
                             **({} if args.mirror_below is None else {"mirror_below": args.mirror_below}))
    options = BatchOptions(out_dir=out_dir, settings=settings, workers=args.workers, ray=args.ray is not None,
                           ray_address=None if args.ray in (None, LOCAL_RAY) else args.ray, force=args.force,
                           retry_failed=args.retry_failed, shard=Shard.parse(args.shard) if args.shard else None,
                           progress=not args.no_progress)
    videos = discover(args.inputs, exclude=out_dir)
    _stop_on_sigterm()
    report = run_batch(videos, options,
                       report=lambda line: print(f"stream-fer: {line}", file=sys.stderr, flush=True))
    if report.ran:
        ran = f" ({report.ran} this run: {report.frames} frames in {report.seconds:.1f} s, {report.fps:.1f} fps)"
    else:
        ran = "" if report.interrupted else " (nothing to do)"
    print(f"{videos_text(report.videos)}: {report.done} done, {report.failed} failed"
          + (f", {report.pending} not finished" if report.pending else "") + ran)
    print(f"table: {report.table}" + (f"\ndata: {report.dataset}" if report.done else ""))
    if report.interrupted:
        print(f"stream-fer: interrupted; run the same command again to finish the other {videos_text(report.pending)}",
              file=sys.stderr)
        raise KeyboardInterrupt
    if report.failed:
        for video, error in report.failures[:5]:
            print(f"  failed: {video}: {error}", file=sys.stderr)
        if report.failed > 5:  # the errors listed above are the first five
            print(f"  ... and {report.failed - 5} more failed", file=sys.stderr)
        print(f"stream-fer: error: {report.failed} of {videos_text(report.videos)} failed; see {report.table}, "
              f"tracebacks in {report.log_path}", file=sys.stderr)
        return 1
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's time limit or preemption, `kill`) stops the batch as Ctrl-C does: the workers
    are stopped, the table written, and a rerun resumes."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
