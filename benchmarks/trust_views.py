"""Does the crop's own reading add to the trust score now that the label is the crop + mirror average?

Validation split only (the test split is not read), product path, the shipped model and trust.json. The crop's
own probabilities are recovered as 2 * average - mirror. Prints the 5-fold cross-validated AUROC of the shipped
feature set, alone and with each candidate added, for three fold seeds.

    python benchmarks/trust_views.py
"""
import json, numpy as np
from stream_fer.engines import default_model_dir
from stream_fer.train.data import load_ferplus
from stream_fer.train.product_path import mirror_probs, run_split
from stream_fer.train import trust as T
from stream_fer.trust import calibrated
md = default_model_dir()
spec = json.loads((md / "trust.json").read_text())
splits = load_ferplus(None)
valid = run_split(splits["valid"], md)
mir = mirror_probs(valid, md)
sf = T.split_features(valid, spec, mir)
keep = np.flatnonzero(T.labelled_found(valid))
avg, m = valid.probs[keep].astype(np.float64), mir[keep].astype(np.float64)
crop = np.clip(2 * avg - m, 1e-9, 1)
crop /= crop.sum(axis=1, keepdims=True)
temp = spec["temperature"]
lab = avg.argmax(axis=1)
cc = np.array([calibrated(c, temp)[l] for c, l in zip(crop, lab)])
mc = np.array([calibrated(x, temp)[l] for x, l in zip(m, lab)])
sf.table["crop_confidence"] = cc
sf.table["min_view_confidence"] = np.minimum(cc, mc)
sf.table["view_gap"] = np.abs(cc - mc)
sf.table["view_label_agree"] = ((crop.argmax(1) == lab) & (m.argmax(1) == lab)).astype(float)
for kind in ("expressive", "neutral"):
    sel = sf.kind == kind; y = sf.right[sel]
    base = tuple(spec["models"][kind]["features"])
    print(kind, "n", sel.sum(), "shipped set", len(base))
    for seed in (0, 1, 2):
        row = [f"{T.cross_validated_auroc(T._matrix(sf, sel, base), y, seed=seed):.4f}"]
        for extra in ("crop_confidence", "min_view_confidence", "view_gap", "view_label_agree"):
            row.append(f"{extra} {T.cross_validated_auroc(T._matrix(sf, sel, base + (extra,)), y, seed=seed):.4f}")
        print("  seed", seed, " ".join(row))
