"""Compare eval.json files side by side (e.g. vanilla vs AU-guided) and print the ratios that the
model card reports.

    python -m train eval --checkpoint RUN/best.pt --split test --json vanilla.json
    python benchmarks/accuracy.py vanilla.json engines/default/eval.json
    python benchmarks/accuracy.py --markdown vanilla.json engines/default/eval.json   # the model card's tables
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def compare(paths: list[Path]) -> str:
    runs = [(p.stem, json.loads(p.read_text())) for p in paths]
    names = [n for n, _ in runs]
    width = max(12, *(len(n) for n in names))
    lines = ["metric".ljust(14) + "".join(n.rjust(width + 2) for n in names)]
    for key in ("n", "accuracy", "macro_f1", "att_cos", "cam_cos"):
        row = [m.get(key) for _, m in runs]
        lines.append(key.ljust(14) + "".join((str(v) if key == "n" else _fmt(v)).rjust(width + 2) for v in row))
    classes = runs[0][1]["classes"]
    for metric in ("recall", "att_cos", "cam_cos"):
        lines.append(f"per class {metric}:")
        for c in classes:
            vals = [m["per_class"][c][metric] for _, m in runs]
            lines.append(f"  {c:<12}" + "".join(_fmt(v).rjust(width + 2) for v in vals))
    if len(runs) == 2:
        (_, a), (_, b) = runs
        lines.append(f"accuracy difference (2nd - 1st): {100 * (b['accuracy'] - a['accuracy']):+.2f} points")
        if a["att_cos"] is not None and b["att_cos"] is not None:
            lines.append(f"ATT-COS difference (2nd - 1st): {b['att_cos'] - a['att_cos']:+.3f}")
    return "\n".join(lines)


def _pct(v) -> str:
    return f"{100 * v:.1f}%"


def markdown(paths: list[Path]) -> str:
    """The model card's tables: metrics side by side, per-class recall / ATT-COS / CAM-COS as 'a -> b',
    and the last file's confusion matrix."""
    runs = [json.loads(p.read_text()) for p in paths]
    names = [p.stem for p in paths]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]
    lines.append("| accuracy | " + " | ".join(_pct(m["accuracy"]) for m in runs) + " |")
    for key, title in (("macro_f1", "macro-F1"), ("att_cos", "ATT-COS"), ("cam_cos", "CAM-COS")):
        lines.append(f"| {title} | " + " | ".join(_fmt(m[key]) for m in runs) + " |")
    classes = runs[-1]["classes"]
    lines += ["", "| class | n | recall | ATT-COS | CAM-COS |", "|---|---:|---:|---:|---:|"]
    for c in classes:
        n = sum(runs[-1]["confusion"][classes.index(c)])
        cells = [" -> ".join(_fmt(m["per_class"][c][k]) for m in runs) for k in ("recall", "att_cos", "cam_cos")]
        lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "| true \\ pred | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for c, row in zip(classes, runs[-1]["confusion"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evals", nargs="+", type=Path, help="eval.json files from `python -m train eval`")
    parser.add_argument("--markdown", action="store_true", help="print the model card's tables")
    args = parser.parse_args()
    print(markdown(args.evals) if args.markdown else compare(args.evals))


if __name__ == "__main__":
    main()
