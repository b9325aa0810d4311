"""Does the crop's own reading add to the trust score now that the label is the crop + mirror average?

Validation split only (the test split is not read), product path, the shipped model and its trust.json. The
crop's own probabilities are recovered as 2 * average - mirror. Prints the 5-fold cross-validated AUROC of
the shipped feature set, alone and with each candidate added, for three fold seeds (RESULTS.md, "Trust: the
crop's own reading beside the mirror's").

    python benchmarks/trust_views.py
"""

from __future__ import annotations

import json
import sys

import numpy as np
from stream_fer.engines import default_model_dir
from stream_fer.train import trust as T
from stream_fer.train.data import load_ferplus
from stream_fer.train.product_path import mirror_probs, run_split

from stream_fer.trust import calibrated

CANDIDATES = ("crop_confidence", "min_view_confidence", "view_gap", "view_label_agree")


def view_features(avg: np.ndarray, mirror: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """The candidates from the averaged and the mirror's probabilities (N, K) of the same faces."""
    crop = np.clip(2 * avg - mirror, 1e-9, 1)
    crop /= crop.sum(axis=1, keepdims=True)
    label = avg.argmax(axis=1)
    crop_conf = np.array([calibrated(c, temperature)[k] for c, k in zip(crop, label)])
    mirror_conf = np.array([calibrated(m, temperature)[k] for m, k in zip(mirror, label)])
    agree = (crop.argmax(axis=1) == label) & (mirror.argmax(axis=1) == label)
    return {"crop_confidence": crop_conf, "min_view_confidence": np.minimum(crop_conf, mirror_conf),
            "view_gap": np.abs(crop_conf - mirror_conf), "view_label_agree": agree.astype(float)}


def main() -> int:
    model_dir = default_model_dir()
    spec = json.loads((model_dir / "trust.json").read_text())
    valid = run_split(load_ferplus(None)["valid"], model_dir)
    mirror = mirror_probs(valid, model_dir)
    sf = T.split_features(valid, spec, mirror)
    keep = np.flatnonzero(T.labelled_found(valid))
    sf.table.update(view_features(valid.probs[keep].astype(np.float64), mirror[keep].astype(np.float64),
                                  spec["temperature"]))
    print_additions(sf, spec, {f"+{c}": (c,) for c in CANDIDATES})
    return 0


def print_additions(sf, spec: dict, additions: dict[str, tuple[str, ...]]) -> None:
    """Per kind of prediction, the 5-fold CV AUROC of trust.json's feature set alone and with each addition,
    for fold seeds 0, 1 and 2 (benchmarks/trust_second_model.py prints its table with this too)."""
    for kind in ("expressive", "neutral"):
        sel = sf.kind == kind
        y = sf.right[sel]
        base = tuple(spec["models"][kind]["features"])
        print(f"{kind}: n {int(sel.sum())}, {int((~y).sum())} wrong; trust.json's feature set of {len(base)}")
        for seed in (0, 1, 2):
            row = [f"as fitted {T.cross_validated_auroc(T._matrix(sf, sel, base), y, seed=seed):.4f}"]
            for name, extra in additions.items():
                auroc = T.cross_validated_auroc(T._matrix(sf, sel, base + extra), y, seed=seed)
                row.append(f"{name} {auroc:.4f}")
            print(f"  fold seed {seed}: " + ", ".join(row))


if __name__ == "__main__":
    sys.exit(main())
