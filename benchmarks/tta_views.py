"""More views of a face at test time: does reading shifted / rescaled copies of the aligned crop (besides its
mirror image) raise FER+ accuracy through the product path? (issue 16; validation only by default)

Each view is the product's aligned crop moved by a small similarity (scale s about the crop's centre, shift dx, dy
in crop pixels, edge pixels repeated as the aligner does), read by the engine as is and mirrored. A reading
averages the probabilities of a set of views. The engine cost is in passes per face.

    python benchmarks/tta_views.py [--model-dir engines/default/int8] [--split valid]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# (scale, dx, dy): the identity first
VIEWS = [(1.0, 0, 0), (1.06, 0, 0), (0.94, 0, 0), (1.0, 1.5, 0), (1.0, -1.5, 0), (1.0, 0, 1.5), (1.0, 0, -1.5),
         (1.12, 0, 0), (0.88, 0, 0)]


def moved(crops: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    """Each crop moved by the small similarity (trust_candidates' variant warp, its replicated border)."""
    from trust_candidates import _warp  # benchmarks/ is on the path when this file is run

    return np.stack([_warp(x, dx=dx, dy=dy, scale=scale) for x in crops])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("engines/default/int8"))
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)

    from sklearn.metrics import f1_score

    from stream_fer.engines.select import load_engine
    from stream_fer.reading import MIRROR_BELOW
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import run_split

    split = load_ferplus(args.data)[args.split]
    out = run_split(split, args.model_dir, mirror_below=1.0)
    keep = out.found & (out.labels >= 0)
    y = out.labels[keep]
    crops = out.crops[keep]
    engine = load_engine(args.model_dir, "onnxruntime", threads=2)
    probs = {}  # (view index, mirrored) -> (n, K)
    for v, (s, dx, dy) in enumerate(VIEWS):
        view = moved(crops, s, dx, dy) if v else crops
        for flip in (False, True):
            x = np.ascontiguousarray(view[:, :, ::-1] if flip else view)
            probs[v, flip] = np.concatenate([engine.infer(x[i:i + 512]).probs for i in range(0, len(x), 512)])

    def show(name: str, p: np.ndarray, cost) -> None:
        pred = p.argmax(axis=1)
        print(f"{name:58s} {np.mean(pred == y):7.2%} {f1_score(y, pred, average='macro'):9.3f} {cost:>7}")

    print(f"{args.split}, product path, {args.model_dir}: {int(keep.sum())} faces")
    print(f"{'reading':58s} {'accuracy':>7s} {'macro-F1':>9s} {'passes':>7s}")
    crop, both = probs[0, False], (probs[0, False] + probs[0, True]) / 2
    show("crop alone", crop, "1")
    show("crop + mirror (every face)", both, "2")
    for v in range(1, len(VIEWS)):
        show(f"view {VIEWS[v]} alone", probs[v, False], "1")
    for v in range(1, len(VIEWS)):
        p = (probs[0, False] + probs[0, True] + probs[v, False] + probs[v, True]) / 4
        show(f"crop + mirror + view {VIEWS[v]} + its mirror", p, "4")
    for name, vs in (("scales 1.06/0.94", [0, 1, 2]), ("shifts", [0, 3, 4, 5, 6]), ("first 7 views", range(7)),
                     ("all views", range(len(VIEWS)))):
        p = np.mean([probs[v, f] for v in vs for f in (False, True)], axis=0)
        show(f"{name}, each with its mirror", p, str(2 * len(vs)))
        unsure = crop.max(axis=1) < MIRROR_BELOW
        q = np.where(unsure[:, None], p, crop)
        show(f"  the same only where the crop is unsure (< {MIRROR_BELOW})", q,
             f"{1 + unsure.mean() * (2 * len(vs) - 1):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
