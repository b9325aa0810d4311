"""What else could tell a wrong prediction from a right one, beyond confidence and the mirrored crop? Each
candidate signal measured on the FER+ validation split only, through the product's own path
(train/product_path.py's cached crops, landmarks, blendshapes and engine outputs), for expressive
predictions (the class the issue's AUROC target is about).

    python benchmarks/trust_candidates.py               # about 5 minutes of one core (11 engine passes)
    python benchmarks/trust_candidates.py --json out.json

Per candidate: its AUROC alone (as a detector of right predictions; below 0.5 means "higher = more likely
wrong") and what it adds to the shipped evidence's core, the calibrated confidence (top probability,
margin, entropy) + the mirrored crop's probability of the label: the change of the 5-fold cross-validated
AUROC of the logistic regression (train/trust.py's fit, mean over three fold seeds). Also the cost per face
of computing it in the product (CPU ms, this machine; an extra engine pass is one more crop in the
engine's batch). The test split is never read here.

Last line: `trust candidates: base B, best added D (name), gradient boosting on all G`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from stream_fer.engines import default_model_dir
from stream_fer.errors import StreamFerError

SEEDS = (0, 1, 2)
CORE = ("confidence", "margin", "entropy", "mirror_confidence")


def _warp(crop: np.ndarray, dx: float = 0, dy: float = 0, scale: float = 1.0, rotate: float = 0.0,
          flip: bool = False) -> np.ndarray:
    """A small change of the alignment, applied to the aligned crop (replicated border)."""
    import cv2

    s = crop.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), rotate, scale)
    m[0, 2] += dx
    m[1, 2] += dy
    out = cv2.warpAffine(crop, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out[:, ::-1] if flip else out


def _gamma(crop: np.ndarray, g: float) -> np.ndarray:
    return np.clip(255.0 * (crop / 255.0) ** g, 0, 255).astype(np.uint8)


def _blank_rows(crop: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = crop.copy()
    out[start:stop] = int(crop.mean())
    return out


def _variants() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import cv2

    s = 48
    return {
        "shift 2 px right": lambda c: _warp(c, dx=2), "shift 2 px down": lambda c: _warp(c, dy=2),
        "scale 0.92": lambda c: _warp(c, scale=0.92), "scale 1.08": lambda c: _warp(c, scale=1.08),
        "rotate 8 deg": lambda c: _warp(c, rotate=8), "mirror + shift 2 px down": lambda c: _warp(c, dy=2, flip=True),
        "gamma 0.7": lambda c: _gamma(c, 0.7), "blur (Gaussian, sigma 0.8)": lambda c: cv2.GaussianBlur(c, (3, 3), 0.8),
        "half resolution": lambda c: cv2.resize(cv2.resize(c, (s // 2, s // 2), interpolation=cv2.INTER_AREA), (s, s)),
        "mouth blanked (rows 30-48)": lambda c: _blank_rows(c, 30, s),
        "eyes blanked (rows 0-22)": lambda c: _blank_rows(c, 0, 22),
    }


class Timer:
    """CPU ms per face of each family of features."""

    def __init__(self):
        self.ms: dict[str, float] = {}

    def run(self, family: str, n: int, fn):
        t = time.process_time()
        out = fn()
        self.ms[family] = self.ms.get(family, 0.0) + 1000 * (time.process_time() - t) / max(1, n)
        return out


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _vote_win(probs: np.ndarray, pred: np.ndarray, voters: int = 10, draws: int = 400) -> np.ndarray:
    """The chance that `voters` annotators drawn from the probabilities (read as vote shares: the model was
    trained on FER+'s 10-vote distributions) make the label the unique majority, given no tie (ties have no
    majority label)."""
    rng = np.random.default_rng(0)
    out = np.zeros(len(probs))
    for i, (p, k) in enumerate(zip(probs.astype(np.float64), pred)):
        v = rng.multinomial(voters, p / p.sum(), size=draws)
        own = v[:, k].copy()
        v[:, k] = -1
        best_other = v.max(1)
        out[i] = (own > best_other).sum() / max(1, (own != best_other).sum())
    return out


def candidate_table(out, spec: dict, mirror: np.ndarray, model_dir: Path
                    ) -> tuple[dict, dict, np.ndarray, dict, np.ndarray, np.ndarray]:
    """({family: {candidate: (n,) or (n, d) values}}, {family: CPU ms per face}, right (n,), the base features,
    the rows of `out` and the predicted classes of the n expressive predictions)."""
    import cv2

    from stream_fer.engines.select import load_engine
    from stream_fer.train.trust import labelled_found, scaled, split_features

    timer = Timer()
    sf = split_features(out, spec, mirror)
    ex = sf.kind == "expressive"
    rows = np.flatnonzero(labelled_found(out))[ex]
    n = len(rows)
    pred, r = sf.pred[ex], np.arange(n)
    t = spec["temperature"]
    crops, points = out.crops[rows], out.crop_points[rows]
    cams, attention = out.cams[rows], out.attention[rows]
    c: dict[str, dict[str, np.ndarray]] = {}

    # 1. Test-time variants of the crop: one more crop each in the engine's batch.
    engine = load_engine(model_dir, "onnxruntime", threads=1)
    variant_probs = {}
    for name, fn in _variants().items():
        batch = timer.run("variant (make the crop)", n, lambda fn=fn: np.stack([fn(x) for x in crops]))
        variant_probs[name] = timer.run("variant (engine pass)", n, lambda b=batch: np.concatenate(
            [engine.infer(np.ascontiguousarray(b[i:i + 256])).probs for i in range(0, n, 256)]))
    timer.ms = {k: v / len(variant_probs) for k, v in timer.ms.items()}  # per variant
    q = {name: scaled(p, t) for name, p in variant_probs.items()}
    c["test-time variant: its calibrated probability of the label"] = {k: v[r, pred] for k, v in q.items()}
    geometric = [k for k in q if k.split()[0] in ("shift", "scale", "rotate", "mirror")]
    stack = np.stack([scaled(mirror[rows], t)] + [q[k] for k in geometric])[:, r, pred]
    flips = np.mean([q[k].argmax(1) != pred for k in geometric], axis=0)
    c["agreement over the mirror and the 6 geometric variants"] = {
        "mean probability of the label": stack.mean(0), "its spread (std)": stack.std(0),
        "lowest probability of the label": stack.min(0), "share of variants whose label differs": flips}

    # 2. More from the mirrored crop (already in the batch): its margin, the divergence, its maps.
    parts = [engine.infer(np.ascontiguousarray(crops[i:i + 256, :, ::-1])) for i in range(0, n, 256)]
    engine_m = type(parts[0])(*(np.concatenate(x) for x in zip(*(astuple(p) for p in parts))))
    qo, qm = scaled(out.probs[rows], t), scaled(engine_m.probs, t)
    sm = np.sort(qm, axis=1)

    def _map_cos(a, b):
        a, b = a.reshape(n, -1), b.reshape(n, -1)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)

    c["mirrored crop"] = timer.run("mirror extras", n, lambda: {
        "mirror's margin": sm[:, -1] - sm[:, -2], "mirror's label = label": (qm.argmax(1) == pred).astype(float),
        "KL(crop || mirror)": (qo * (np.log(qo + 1e-12) - np.log(qm + 1e-12))).sum(1),
        "attention vs mirror's (mirrored back), cosine": _map_cos(attention, engine_m.attention[:, :, ::-1]),
        "label's CAM vs mirror's, cosine": _map_cos(cams[r, pred], engine_m.cams[r, pred][:, :, ::-1])})

    # 3. The CAMs as spatially resolved logits (their spatial mean is the logit).
    def _cam_features():
        order = np.argsort(-cams.mean((2, 3)), axis=1)
        second = order[:, 1]
        margin_map = cams[r, pred] - cams[r, second]
        h = cams.shape[-1]
        half = {}
        for tag, sl in (("upper half", slice(0, h // 2)), ("lower half", slice(h // 2, h))):
            half[f"label's probability from the {tag}'s CAMs"] = _softmax_rows(cams[:, :, sl, :].mean((2, 3)))[r, pred]
        hull_share = np.zeros(n)
        for i in range(n):
            m = np.zeros(crops.shape[1:], np.uint8)
            cv2.fillConvexPoly(m, cv2.convexHull(points[i].astype(np.float32)).astype(np.int32), 1)
            inside = cv2.resize(m.astype(np.float32), (h, h), interpolation=cv2.INTER_AREA) > 0.5
            a = np.clip(attention[i], 0, None)
            hull_share[i] = a[inside].sum() / (a.sum() + 1e-9)
        return {"share of CAM cells that vote for the label": (cams.argmax(1) == pred[:, None, None]).mean((1, 2)),
                "share of cells where the runner-up leads": (margin_map < 0).mean((1, 2)),
                **half, "attention inside the face outline": hull_share}

    c["class activation maps"] = timer.run("CAM features", n, _cam_features)

    def _cam_au():
        from stream_fer.analyzer import attention_au_cosine, crop_au_masks
        from stream_fer.face.action_units import EXPRESSION_AUS
        from stream_fer.face.classes import CLASS_NAMES

        cos, gap = np.full(n, np.nan), np.full(n, np.nan)
        for i in range(n):
            masks = crop_au_masks(points[i], out.crop_size)
            order = np.argsort(-out.probs[rows[i]])
            label = CLASS_NAMES[order[0]]
            rival = next((int(k) for k in order[1:] if EXPRESSION_AUS.get(CLASS_NAMES[k])), None)
            a = attention_au_cosine(np.clip(cams[i, order[0]], 0, None), points[i], out.crop_size, label, masks)
            cos[i] = np.nan if a is None else a
            if rival is not None and a is not None:
                b = attention_au_cosine(np.clip(cams[i, rival], 0, None), points[i], out.crop_size,
                                        CLASS_NAMES[rival], masks)
                gap[i] = np.nan if b is None else a - b
        return {"label's CAM vs its AU map, cosine": cos, "the same minus the runner-up's": gap}

    c["class activation maps"].update(timer.run("CAM vs AU map", n, _cam_au))

    # 4. Landmark geometry: pose and how far the face is from the average aligned face.
    def _geometry():
        eye_l, eye_r, nose = points[:, 33], points[:, 263], points[:, 1]
        iod = np.linalg.norm(eye_r - eye_l, axis=1)
        mid = (eye_l + eye_r) / 2
        return {"yaw (nose off the eyes' midline)": np.abs(nose[:, 0] - mid[:, 0]) / iod,
                "pitch (nose below the eyes)": (nose[:, 1] - mid[:, 1]) / iod,
                "alignment residual to the mean face": np.linalg.norm(points - points.mean(0), axis=2).mean(1),
                "landmarks outside the crop": ((points < 0) | (points > out.crop_size)).any(-1).mean(1)}

    c["landmarks"] = timer.run("landmark geometry", n, _geometry)

    # 5. Image quality of the crop.
    def _quality():
        flat = crops.reshape(n, -1).astype(np.float32)
        return {"sharpness (log variance of the Laplacian)": np.log1p(
                    [cv2.Laplacian(x, cv2.CV_32F).var() for x in crops.astype(np.float32)]),
                "contrast (std)": flat.std(1), "brightness (mean)": flat.mean(1)}

    c["image quality"] = timer.run("image quality", n, _quality)

    # 6. The probabilities themselves, other forms; blendshapes in full.
    probs = out.probs[rows]
    base = {k: sf.table[k][ex] for k in CORE}
    votes = timer.run("10-annotator vote", n, lambda: {
        "chance the label wins 10 votes drawn from the probabilities": _vote_win(probs, pred),
        "the same, crop and mirror averaged": _vote_win((probs + mirror[rows]) / 2, pred)})
    c["probabilities and blendshapes"] = {**votes,
        "log(1 - confidence), log(1 - mirror's), log margin": np.column_stack(
            [np.log(1 - base["confidence"] + 1e-4), np.log(1 - base["mirror_confidence"] + 1e-4),
             np.log(base["margin"] + 1e-4)]),
        "all 7 log-probabilities": np.log(np.clip(probs, 1e-6, 1)),
        "predicted class x confidence (7 + 7)": np.column_stack(
            [np.eye(probs.shape[1])[pred], np.eye(probs.shape[1])[pred] * base["confidence"][:, None]]),
        "runner-up class (one-hot)": np.eye(probs.shape[1])[np.argsort(-probs, 1)[:, 1]],
        "all 52 blendshape scores": out.blendshapes[rows]}
    return c, timer.ms, sf.right[ex], base, rows, pred


def pooled_candidates(out, rows: np.ndarray, pred: np.ndarray, model_dir: Path) -> dict[str, np.ndarray] | None:
    """Candidates that need the network's pooled features (the ONNX engine does not output them): read from
    the PyTorch checkpoint. None when torch or the checkpoint is missing."""
    from stream_fer.train.trust import labelled_found

    rows_all = np.flatnonzero(labelled_found(out))
    labels_all = out.labels[rows_all]
    try:
        import torch

        from stream_fer.train.checkpoint import load_model
        from stream_fer.train.model import normalise
    except ImportError:
        return None
    path = model_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    torch.set_num_threads(1)
    model, _ = load_model(path)
    model.eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(rows_all), 256):
            x = normalise(torch.from_numpy(np.ascontiguousarray(out.crops[rows_all[i:i + 256]])), model.config)
            feats.append(model.heads(model.features(x))[3].numpy())
    pooled_all = np.concatenate(feats)
    w, b = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    pos = np.searchsorted(rows_all, rows)
    x = pooled_all[pos]
    n, r = len(rows), np.arange(len(rows))
    logits = x @ w.T + b
    second = np.argsort(-logits, 1)[:, 1]
    # Dropout (p = 0.3, before the classifier) as a source of spread: the margin in units of its std.
    z = (logits[r, pred] - logits[r, second]) / np.sqrt((((w[pred] - w[second]) * x) ** 2).sum(1) * 0.3 / 0.7)
    # Neighbours and class prototypes among the other validation faces (5 interleaved folds: never itself).
    unit_all = pooled_all / np.linalg.norm(pooled_all, axis=1, keepdims=True)
    knn, proto_gap = np.zeros(n), np.zeros(n)
    folds_all = np.arange(len(rows_all)) % 5
    for k in range(5):
        bank = folds_all != k
        q = np.flatnonzero(folds_all[pos] == k)
        sims = unit_all[pos[q]] @ unit_all[bank].T
        knn[q] = (labels_all[bank][np.argsort(-sims, 1)[:, :20]] == pred[q, None]).mean(1)
        protos = np.stack([unit_all[bank][labels_all[bank] == j].mean(0) for j in range(w.shape[0])])
        cs = unit_all[pos[q]] @ protos.T
        own = cs[np.arange(len(q)), pred[q]]
        cs[np.arange(len(q)), pred[q]] = -np.inf
        proto_gap[q] = own - cs.max(1)
    return {"dropout z of the margin": z, "feature norm": np.linalg.norm(x, axis=1),
            "20 nearest validation faces with the label": knn, "prototype cosine gap (label - best other)": proto_gap}


def added_auroc(core: np.ndarray, extra: np.ndarray, y: np.ndarray, base: float) -> float:
    from stream_fer.train.trust import cross_validated_auroc

    x = np.column_stack([core, extra]).astype(np.float64)
    x = np.where(np.isfinite(x), x, np.nanmean(x, axis=0))
    return float(np.mean([cross_validated_auroc(x, y, seed=s) for s in SEEDS])) - base


def averaged_label(out, mirror: np.ndarray) -> dict[str, dict[str, float]]:
    """What if the label shown were the average of the crop's and the mirror's log-probabilities (the mirrored
    pass is already run for the trust score, so it would cost nothing)? Accuracy, and how well the
    confidence evidence (temperature refitted for that label) and the crop's and mirror's probabilities of
    the label detect its errors (expressive predictions, 5-fold CV as above)."""
    from stream_fer.train.trust import cross_validated_auroc, fit_temperature, labelled_found, scaled

    keep = labelled_found(out)
    labels, crop, mirrored = out.labels[keep], out.probs[keep], mirror[keep]
    averaged = np.exp((np.log(np.clip(crop, 1e-12, 1)) + np.log(np.clip(mirrored, 1e-12, 1))) / 2)
    averaged /= averaged.sum(axis=1, keepdims=True)
    res = {}
    for name, probs in (("crop alone (as shipped until session 6)", crop), ("crop + mirror averaged", averaged)):
        t = fit_temperature(probs, labels)
        q = scaled(probs, t)
        pred, srt, r = q.argmax(1), np.sort(q, axis=1), np.arange(len(q))
        ex = pred != 0
        x = np.column_stack([srt[:, -1], srt[:, -1] - srt[:, -2], -(q * np.log(q + 1e-12)).sum(1),
                             scaled(crop, t)[r, pred], scaled(mirrored, t)[r, pred]])[ex]
        y = (pred == labels)[ex]
        res[name] = {"accuracy": float((pred == labels).mean()), "expressive_accuracy": float(y.mean()),
                     "auroc_confidence": float(np.mean([cross_validated_auroc(x[:, :3], y, seed=s) for s in SEEDS])),
                     "auroc_confidence_crop_mirror": float(np.mean([cross_validated_auroc(x, y, seed=s)
                                                                    for s in SEEDS]))}
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--data", help="ferplus.tar.gz or its extracted folder")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from stream_fer.train.data import load_ferplus
    from stream_fer.train.product_path import mirror_probs, run_split
    from stream_fer.train.trust import _fit, cross_validated_auroc

    try:
        spec = json.loads((args.model_dir / "trust.json").read_text())
        splits = load_ferplus(args.data)
    except (OSError, StreamFerError) as exc:
        print(f"trust candidates: {exc}", file=sys.stderr)
        return 2
    # the crop alone, as the analyzer read a face when this study ran (session 5; RESULTS.md): run_split's
    # default has averaged each crop with its mirror image since session 6, which the candidates here assume not
    valid = run_split(splits["valid"], args.model_dir, mirror=False)
    mirror = mirror_probs(valid, args.model_dir)
    families, cost, y, base_features, rows, pred = candidate_table(valid, spec, mirror, args.model_dir)
    core = np.column_stack([base_features[k] for k in CORE])
    base = float(np.mean([cross_validated_auroc(core, y, seed=s) for s in SEEDS]))
    conf_only = float(np.mean([cross_validated_auroc(core[:, :3], y, seed=s) for s in SEEDS]))

    pooled = pooled_candidates(valid, rows, pred, args.model_dir)
    if pooled is not None:
        families["pooled features (checkpoint; the engine does not output them)"] = pooled

    n_wrong = int((~y).sum())
    print(f"FER+ validation, product path, expressive predictions: n {len(y)}, wrong {n_wrong}")
    print(f"5-fold CV AUROC (mean of {len(SEEDS)} fold seeds): confidence {conf_only:.4f}, "
          f"confidence + mirror (base) {base:.4f}")
    rng = np.random.default_rng(0)
    # The sampling noise of a validation AUROC (bootstrap of the base's in-sample scores): what a gain must beat.
    mean, scale, lr = _fit(core, y)
    s = lr.decision_function((core - mean) / scale)
    boots = []
    for _ in range(500):
        i = rng.integers(0, len(y), len(y))
        boots.append(roc_auc_score(y[i], s[i]))
    print(f"bootstrap std of the base's AUROC on this split: {np.std(boots):.4f}\n")
    print(f"{'candidate':<62} {'alone':>6} {'added':>8}")
    results, all_columns = {}, [core]
    best = ("", -1.0)
    for family, cands in families.items():
        print(f"{family}")
        for name, values in cands.items():
            v = np.asarray(values, dtype=np.float64)
            alone = float("nan")
            if v.ndim == 1:
                filled = np.where(np.isfinite(v), v, np.nanmean(v))
                alone = float(roc_auc_score(y, filled))
            gain = added_auroc(core, v, y, base)
            all_columns.append(v.reshape(len(y), -1))
            results[f"{family}: {name}"] = {"alone": alone, "added": gain}
            if gain > best[1]:
                best = (name, gain)
            print(f"  {name:<60} {'' if np.isnan(alone) else f'{alone:.3f}':>6} {gain:>+8.4f}")
    print("\nCPU ms per face (this machine; `uptime` for its load):")
    for family, ms in cost.items():
        print(f"  {family:<30} {ms:.3f}")

    # A flexible model on everything at once: if this does not beat the base, a linear one will not either.
    x = np.column_stack(all_columns)
    x = np.where(np.isfinite(x), x, np.nanmean(x, axis=0))
    scores = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        gbm = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0)
        scores[te] = gbm.fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    gbm_auc = float(roc_auc_score(y, scores))
    print(f"\ngradient boosting on every candidate and the base ({x.shape[1]} columns), 5-fold: {gbm_auc:.4f}")
    averaged = averaged_label(valid, mirror)
    print("\nif the label were the crop and mirror averaged (validation; AUROC: expressive, 5-fold):")
    for name, r in averaged.items():
        print(f"  {name:<24} accuracy {r['accuracy']:.4f} (expressive {r['expressive_accuracy']:.4f}), AUROC "
              f"confidence {r['auroc_confidence']:.4f}, + crop's and mirror's {r['auroc_confidence_crop_mirror']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"n": len(y), "wrong": n_wrong, "confidence": conf_only, "base": base,
                                         "bootstrap_std": float(np.std(boots)), "candidates": results,
                                         "cost_ms_per_face": cost, "gradient_boosting_all": gbm_auc,
                                         "averaged_label": averaged}, indent=1) + "\n")
    print(f"trust candidates: base {base:.3f}, best added {best[1]:+.4f} ({best[0]}), "
          f"gradient boosting on all {gbm_auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
