"""What averaging models would give, through the product path, on FER+ validation (issue 16's ceiling check).

Each exported model folder is run the way the product reads a face (train/product_path.run_split: MediaPipe
landmarks, aligned crop, the engine, each face averaged with its mirror image; cached per model), then every
non-empty subset of the models is scored with its probabilities averaged (equal weights). It also says how many of
the first model's errors every model shares: when most errors are common to all, an ensemble (and a student
distilled from it) has little to gain.

    python benchmarks/ensemble.py --model-dir engines/default --model-dir DIR2 [--model-dir DIR3] [--crop-only]

Validation only by default: the test split is looked at once, at the end (issue 16), with --split test.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", action="append", required=True, type=Path,
                        help="an exported model folder (repeat: two or more)")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--crop-only", action="store_true", help="each crop alone, not averaged with its mirror")
    parser.add_argument("--data", default=None, help="ferplus.tar.gz or its extracted folder")
    args = parser.parse_args(argv)

    from sklearn.metrics import f1_score

    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import run_split

    split = load_ferplus(args.data)[args.split]
    outs = [run_split(split, d, mirror=not args.crop_only) for d in args.model_dir]
    found = np.logical_and.reduce([o.found for o in outs])
    labels = outs[0].labels
    keep = found & (labels >= 0)
    y = labels[keep]
    names = [d.name if d.name not in ("", ".") else str(d) for d in args.model_dir]
    print(f"{args.split}, product path{' (each crop alone)' if args.crop_only else ' (with mirror)'}: "
          f"{int(keep.sum())} faces found by all and labelled")
    print(f"{'models averaged':60s} {'accuracy':>9s} {'macro-F1':>9s}")
    for r in range(1, len(outs) + 1):
        for combo in itertools.combinations(range(len(outs)), r):
            probs = np.mean([outs[i].probs[keep] for i in combo], axis=0)
            pred = probs.argmax(axis=1)
            f1 = f1_score(y, pred, labels=list(range(probs.shape[1])), average="macro", zero_division=0)
            print(f"{' + '.join(names[i] for i in combo):60s} {np.mean(pred == y):9.2%} {f1:9.3f}")
    wrong = [outs[i].probs[keep].argmax(axis=1) != y for i in range(len(outs))]
    shared = np.logical_and.reduce(wrong)
    print(f"errors of {names[0]}: {int(wrong[0].sum())}, of which every model gets wrong: {int(shared.sum())} "
          f"({shared.sum() / max(1, wrong[0].sum()):.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
