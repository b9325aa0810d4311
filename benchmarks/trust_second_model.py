"""Does a second, separately trained model's reading of the same face tell the trust score anything more?

Validation split only (the test split is not read), product path (each face read with its mirror image, as
the analyzer reads it), the model in --model with its trust.json, and a second exported model (--second).
The candidates come from the second model's probabilities of the same faces: its temperature-scaled
probability of the first model's label (temperature fitted on validation, as `python -m train trust` fits
the first's), whether its own label agrees, and the total-variation distance between the two readings.
Prints the 5-fold cross-validated AUROC of the first model's trust feature set, alone and with each
candidate added, for three fold seeds, and the accuracy of the two models averaged (the ensemble the extra
engine passes would buy anyway). Costs nothing to run beyond the two product-path caches.

    python benchmarks/trust_second_model.py --second DIR [--model engines/default]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from stream_fer.engines import default_model_dir
from stream_fer.train import trust as T
from stream_fer.train.data import load_ferplus
from stream_fer.train.product_path import mirror_probs, run_split

from stream_fer.trust import calibrated
from trust_views import print_additions  # the same table as benchmarks/trust_views.py

CANDIDATES = ("second_confidence", "second_agrees", "second_distance")


def second_features(first: np.ndarray, second: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """The candidates from two models' probabilities (N, K) of the same faces; the label is the first's."""
    label = first.argmax(axis=1)
    conf = np.array([calibrated(p, temperature)[k] for p, k in zip(second, label)])
    return {"second_confidence": conf, "second_agrees": (second.argmax(axis=1) == label).astype(float),
            "second_distance": 0.5 * np.abs(first - second).sum(axis=1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="the product's model (default: engines/default)")
    parser.add_argument("--second", type=Path, required=True, help="the second exported model folder")
    args = parser.parse_args(argv)
    model_dir = args.model or default_model_dir()
    spec = json.loads((model_dir / "trust.json").read_text())
    split = load_ferplus(None)["valid"]
    first, second = run_split(split, model_dir), run_split(split, args.second)
    if not (np.array_equal(first.found, second.found) and np.array_equal(first.labels, second.labels)):
        print("the two product-path runs did not see the same faces", file=sys.stderr)
        return 1
    keep = np.flatnonzero(T.labelled_found(first))
    labels = first.labels[keep]
    p1, p2 = first.probs[keep].astype(np.float64), second.probs[keep].astype(np.float64)
    sf = T.split_features(first, spec, mirror_probs(first, model_dir))
    sf.table.update(second_features(p1, p2, T.fit_temperature(p2, labels)))
    accuracy = {name: float(np.mean(p.argmax(1) == labels)) for name, p in (("first", p1), ("second", p2),
                                                                              ("averaged", p1 + p2))}
    print(f"validation, product path: n {len(keep)}; accuracy {accuracy['first']:.4f} ({model_dir}), "
          f"{accuracy['second']:.4f} ({args.second}), the two averaged {accuracy['averaged']:.4f}")
    additions = {f"+{c}": (c,) for c in CANDIDATES}
    additions["+all three"] = CANDIDATES
    print_additions(sf, spec, additions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
