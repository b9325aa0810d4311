"""Two model folders' product-path readings of the same FER+ faces, paired: the accuracy of each, the faces one gets
right and the other wrong, and McNemar's exact test (issue 16: is a gain on validation more than noise?).

    python benchmarks/paired_readings.py DIR_A DIR_B [--split valid] [--mirror-below P]

A folder with a mirror model (engines/pair.py) is read as the product reads it, its mirror images by that model.
Validation by default: the test split is looked at once, at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--mirror-below", type=float, default=None, help="default: the analyzer's")
    parser.add_argument("--data", default=None, help="ferplus.tar.gz or its extracted folder")
    args = parser.parse_args(argv)

    from scipy.stats import binomtest
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import run_split

    split = load_ferplus(args.data)[args.split]
    a, b = (run_split(split, d, mirror_below=args.mirror_below) for d in (args.a, args.b))
    keep = a.found & b.found & (a.labels >= 0)
    y = a.labels[keep]
    right_a, right_b = a.probs[keep].argmax(1) == y, b.probs[keep].argmax(1) == y
    only_b, only_a = int((right_b & ~right_a).sum()), int((right_a & ~right_b).sum())
    p = binomtest(only_b, only_b + only_a).pvalue if only_a + only_b else 1.0
    print(f"{args.split}, product path, {int(keep.sum())} faces: {args.a} {right_a.mean():.2%}, {args.b} "
          f"{right_b.mean():.2%}; right only by the second {only_b}, only by the first {only_a}; McNemar p {p:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
