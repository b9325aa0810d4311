"""Where stream_fer.summary's low-trust threshold comes from: the model's own validation data.

Every FER+ validation face is run the way the product runs a face (train/product_path.py: MediaPipe on the
upscaled image, the aligned crop, the shipped engine; cached), and its attention-to-AU cosine is computed
with the run time's own function (stream_fer.analyzer.attention_au_cosine) against the AU map of the
*predicted* label, as a results file holds it. Neutral predictions have no AU map and are left out.

Prints the cosine's percentiles for right and wrong predictions, and for candidate thresholds the share of
right and of wrong predictions below each (what "low trust" would flag) and the accuracy above and below.

    python benchmarks/low_trust_threshold.py [--split valid]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_fer.analyzer import attention_au_cosine
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.summary import LOW_TRUST_COSINE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid", help="FER+ split (default: valid)")
    args = parser.parse_args()
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import run_split

    out = run_split(load_ferplus()[args.split])
    keep = out.found & (out.labels >= 0)
    pred = out.probs.argmax(axis=1)
    cos, right = [], []
    for i in np.flatnonzero(keep):
        label = CLASS_NAMES[int(pred[i])]
        c = attention_au_cosine(out.attention[i], out.crop_points[i].astype(np.float64), out.crop_size, label)
        if c is None:
            continue
        cos.append(c)
        right.append(pred[i] == out.labels[i])
    cos, right = np.array(cos), np.array(right)
    print(f"FER+ {args.split}: {keep.sum()} faces found with a label, {len(cos)} predicted with an AU map "
          f"(not neutral); accuracy on those {right.mean():.3f}")
    qs = (1, 2, 5, 10, 25, 50)
    for name, sel in (("right", right), ("wrong", ~right)):
        pct = "  ".join(f"p{q}={np.percentile(cos[sel], q):.3f}" for q in qs)
        print(f"  cosine of {name} predictions (n={sel.sum()}): mean {cos[sel].mean():.3f}  {pct}")
    print("  threshold  right below  wrong below  accuracy below  accuracy above")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        below = cos < t
        acc_below = right[below].mean() if below.any() else float("nan")
        acc_above = right[~below].mean() if (~below).any() else float("nan")
        mark = "  <- LOW_TRUST_COSINE" if abs(t - LOW_TRUST_COSINE) < 1e-9 else ""
        right_below = (below & right).sum() / right.sum()
        wrong_below = (below & ~right).sum() / (~right).sum()
        print(f"  {t:9.2f}  {right_below:11.1%}  {wrong_below:11.1%}  {acc_below:14.3f}  {acc_above:14.3f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
