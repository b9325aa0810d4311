"""A small network as the first reader of a cascade, against the default as the product reads a face (FER+ validation,
product path; issue 15's engine cost against issue 16's accuracy).

Each face through the product path (train/product_path.run_split, every mirror image read so that any reading can be
composed from the cache): the default's crop alone, the product's reading (the mirror image too where the crop's top
probability is below stream_fer.reading.MIRROR_BELOW), the small network alone and with its mirror image, and the
cascade: the small network's crop reading where its top probability is at least T, the product's reading elsewhere.
The engine cost is in passes of the default network per face (the small network's pass counted by multiply-adds).

    python benchmarks/cascade.py SMALL_DIR [--default engines/default/int8] [--small-macs 33] [--default-macs 129]

Validation only by default (--split test looks at the test split: once, at the end).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("small", type=Path, help="the small network's exported folder (e.g. its int8/)")
    parser.add_argument("--default", type=Path, default=Path("engines/default/int8"))
    parser.add_argument("--small-macs", type=float, default=33.0, help="M multiply-adds per face of the small one")
    parser.add_argument("--default-macs", type=float, default=129.0)
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--data", default=None, help="ferplus.tar.gz or its extracted folder")
    args = parser.parse_args(argv)

    from sklearn.metrics import f1_score
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import run_split

    from stream_fer.reading import MIRROR_BELOW

    split = load_ferplus(args.data)[args.split]
    big = run_split(split, args.default, mirror_below=1.0)
    small = run_split(split, args.small, mirror_below=1.0)
    keep = big.found & small.found & (big.labels >= 0)
    y = big.labels[keep]
    big_mirror, small_mirror = big.mirror_probs[keep], small.mirror_probs[keep]
    big_crop, small_crop = 2 * big.probs[keep] - big_mirror, 2 * small.probs[keep] - small_mirror
    ratio = args.small_macs / args.default_macs
    unsure = big_crop.max(axis=1) < MIRROR_BELOW
    product = np.where(unsure[:, None], (big_crop + big_mirror) / 2, big_crop)

    def show(name: str, probs: np.ndarray, cost: float) -> None:
        pred = probs.argmax(axis=1)
        print(f"{name:62s} {np.mean(pred == y):7.2%} {f1_score(y, pred, average='macro'):9.3f} {cost:6.2f}")

    print(f"{args.split}, product path: {int(keep.sum())} faces found and labelled")
    print(f"{'reading':62s} {'accuracy':>7s} {'macro-F1':>9s} {'passes':>6s}")
    show("default, crop alone", big_crop, 1.0)
    show(f"default, mirror image where unsure (< {MIRROR_BELOW}): the product", product, 1 + unsure.mean())
    show("small, crop alone", small_crop, ratio)
    show("small, with its mirror image", (small_crop + small_mirror) / 2, 2 * ratio)
    for t in (0.7, 0.8, 0.9, 0.95):
        on = small_crop.max(axis=1) < t  # the small network unsure: the product's reading
        cost = ratio + on.mean() + np.mean(on & unsure)
        show(f"cascade: small where its top >= {t}, else the product ({on.mean():.0%})",
             np.where(on[:, None], product, small_crop), cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
