"""Compare eval.json files side by side (e.g. vanilla vs AU-guided) and print the ratios that the
model card reports.

    python -m train eval --checkpoint RUN/best.pt --split test --json vanilla.json
    python benchmarks/accuracy.py vanilla.json engines/default/eval.json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evals", nargs="+", type=Path, help="eval.json files from `python -m train eval`")
    print(compare(parser.parse_args().evals))


if __name__ == "__main__":
    main()
