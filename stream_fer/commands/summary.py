"""`stream-fer summary F`: per video and per track, what a results file (CSV, JSON Lines, Parquet) says:
time tracked, share of time per smoothed expression, mean confidence, label switches per minute and the
trust signal (stream_fer.summary)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "summary", help="per-track summary of a results file (.parquet, .csv, .jsonl)",
        description="Summarise a results file written by `stream-fer run` (--parquet, --csv or --jsonl): per "
                    "track the time tracked, the share of time per smoothed expression, the mean confidence, "
                    "label switches per minute, the mean attention-to-AU cosine and the share of low-trust "
                    "frames.")
    parser.add_argument("results", help="a results file: .parquet, .csv or .jsonl")
    parser.add_argument("--out", "-o", metavar="FILE", help="also write the table (.csv, .json or .parquet)")
    parser.add_argument("--low-trust", type=float, metavar="COS", default=None,
                        help="cosine under which a frame counts as low trust (default: 0.7, from the model's "
                             "validation data)")
    parser.set_defaults(handler=_summary)


def _summary(args) -> int:
    from pathlib import Path

    from stream_fer.errors import StreamFerError
    from stream_fer.results import read_results
    from stream_fer.sinks import check_writable
    from stream_fer.summary import LOW_TRUST_COSINE, format_summary, summarize

    threshold = LOW_TRUST_COSINE if args.low_trust is None else args.low_trust
    if not 0.0 <= threshold <= 1.0:
        raise StreamFerError(f"--low-trust must be between 0 and 1, not {threshold}")
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() not in (".csv", ".json", ".parquet"):
            raise StreamFerError(f"--out {out}: name it .csv, .json or .parquet")
        check_writable(out)
    df = read_results(args.results)
    meta = df.attrs.get("stream_fer") or {}
    table = summarize(df, fps=(meta.get("source") or {}).get("fps"), threshold=threshold)
    if meta.get("source"):
        print(f"{meta['source'].get('description', '')}")
    print(format_summary(table))
    if out is not None:
        suffix = out.suffix.lower()
        if suffix == ".csv":
            table.to_csv(out, index=False)
        elif suffix == ".json":
            table.to_json(out, orient="records", indent=1)
        else:
            table.to_parquet(out, index=False)
        print(f"summary written to {out}")
    return 0
