"""`stream-fer report F --out report.html`: the self-contained HTML report of a results file. With
`--video IN` (the video the results came from) the report also shows key frames with their explanation
panels, analysed again from the video; without it, charts only (the report says so)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="an HTML report of a results file (timelines, shares, key frames)",
        description="Write one self-contained HTML file (no network needed to view it) from a results file of "
                    "`stream-fer run`: per track a timeline of the smoothed probabilities with low-trust "
                    "stretches shaded, the share of time per expression and, with --video, key frames with "
                    "their explanation panels.")
    parser.add_argument("results", help="a results file: .parquet, .csv or .jsonl")
    parser.add_argument("--out", "-o", metavar="FILE", required=True, help="the report (.html)")
    parser.add_argument("--video", metavar="IN", help="the analysed video, for key frames with explanations")
    parser.add_argument("--model", metavar="DIR", help="the model folder used for the results (key frames)")
    parser.add_argument("--landmarker", metavar="PATH", help="face_landmarker.task (key frames)")
    parser.add_argument("--title", help="the report's title (default: the source's name)")
    parser.set_defaults(handler=_report)


def _report(args) -> int:
    from pathlib import Path

    from stream_fer.errors import StreamFerError
    from stream_fer.report import MAX_TRACKS, keyframes_from_video, require_matplotlib, write_report
    from stream_fer.results import read_results
    from stream_fer.sinks import check_writable

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise StreamFerError(f"--out {out}: the report is an HTML file, name it .html")
    if args.video and not Path(args.video).is_file():
        raise StreamFerError(f"video not found: {args.video}")
    require_matplotlib()
    check_writable(out)
    df = read_results(args.results)
    meta = df.attrs.get("stream_fer") or {}
    keyframes, why = None, "No key frames: give --video with the analysed video to include them."
    if args.video:
        faces = df[df["track_id"].notna()]
        tracks = [int(t) for t in faces["track_id"].value_counts().index[:MAX_TRACKS]]
        keyframes = keyframes_from_video(df, args.video, tracks, model=args.model, landmarker=args.landmarker)
        why = None
    title = args.title or (meta.get("source") or {}).get("description") or Path(args.results).name
    path = write_report(out, df, metadata=meta, keyframes=keyframes, title=title, why_no_keyframes=why)
    print(f"report written to {path}")
    return 0
