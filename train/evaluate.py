"""`python -m train eval`: accuracy, macro-F1, confusion, and how well the model's attention and CAMs
agree with the true class's AU map (ATT-COS, CAM-COS), overall and per class (METHOD.md, "Metrics")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from stream_fer.errors import StreamFerError
from stream_fer.face.classes import CLASS_NAMES, NUM_CLASSES
from stream_fer.train.aligned import INPUTS, aligned_splits
from stream_fer.train.au_targets import split_maps
from stream_fer.train.checkpoint import load_model
from stream_fer.train.data import FerSplit, load_ferplus
from stream_fer.train.landmarks import load_cache
from stream_fer.train.model import normalise

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(model, images: np.ndarray, batch: int = 256, device: str = "cpu"):
    """probs (N, K), attention (N, h, w), cams (N, K, h, w) as float32 numpy."""
    model.eval()
    probs, atts, cams = [], [], []
    for i in range(0, len(images), batch):
        x = normalise(torch.from_numpy(images[i : i + batch]), model.config).to(device)
        logits, att, cam = model(x)
        probs.append(F.softmax(logits.float(), dim=1).cpu())
        atts.append(att.float().cpu())
        cams.append(cam.float().cpu())
    return torch.cat(probs).numpy(), torch.cat(atts).numpy(), torch.cat(cams).numpy()


def map_cosine(explanations: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Per-sample cosine between explanation maps (N, h, w), upsampled bilinearly to the AU maps' size
    and shifted to be non-negative, and the AU maps (N, H, W)."""
    up = F.interpolate(torch.from_numpy(explanations).float().unsqueeze(1), size=maps.shape[-2:],
                       mode="bilinear", align_corners=False).squeeze(1).flatten(1)
    up = up - up.min(dim=1, keepdim=True).values
    target = torch.from_numpy(maps.astype(np.float32)).flatten(1)
    return F.cosine_similarity(up, target, dim=1, eps=1e-8).numpy()


def compute_metrics(labels: np.ndarray, probs: np.ndarray, attention: np.ndarray, cams: np.ndarray,
                    maps: np.ndarray, valid: np.ndarray) -> dict:
    """All metrics over the samples with a 7-class majority label (labels >= 0)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    keep = labels >= 0
    y, pred = labels[keep], probs[keep].argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    recall = recall_score(y, pred, labels=classes, average=None, zero_division=0)
    has_map = valid[keep]
    att_cos = np.full(len(y), np.nan)
    cam_cos = np.full(len(y), np.nan)
    if has_map.any():
        att_cos[has_map] = map_cosine(attention[keep][has_map], maps[keep][has_map])
        true_cams = cams[keep][has_map, y[has_map]]
        cam_cos[has_map] = map_cosine(true_cams, maps[keep][has_map])
    per_class = {}
    for k, name in enumerate(CLASS_NAMES):
        sel = (y == k) & has_map
        per_class[name] = {
            "n": int((y == k).sum()),
            "recall": float(recall[k]),
            "att_cos": float(att_cos[sel].mean()) if sel.any() else None,
            "cam_cos": float(cam_cos[sel].mean()) if sel.any() else None,
        }
    expressive = [per_class[n] for n in CLASS_NAMES if n != "neutral"]

    def mean_over_classes(key):
        values = [c[key] for c in expressive if c[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "n": int(keep.sum()),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
        "att_cos": mean_over_classes("att_cos"),
        "cam_cos": mean_over_classes("cam_cos"),
        "per_class": per_class,
        "confusion": confusion_matrix(y, pred, labels=classes).tolist(),
        "classes": list(CLASS_NAMES),
        "n_with_au_map": int(has_map.sum()),
    }


def evaluate_split(model, split: FerSplit, cache, device: str = "cpu") -> tuple[dict, dict]:
    """(metrics, arrays) for a split; arrays hold what the figures and sample metrics need."""
    maps, valid = split_maps(split, cache)
    probs, attention, cams = predict(model, split.images, device=device)
    metrics = compute_metrics(split.labels, probs, attention, cams, maps, valid)
    return metrics, {"labels": split.labels, "probs": probs, "attention": attention, "cams": cams, "maps": maps,
                     "valid": valid}


def sample_metrics(arrays: dict, n: int) -> dict:
    """Metrics on the first n images of the evaluated split, from arrays already computed: lets a
    quick `eval --limit n` run be checked against a full run's eval.json."""
    a = {k: v[:n] for k, v in arrays.items()}
    return {"limit": n, **compute_metrics(a["labels"], a["probs"], a["attention"], a["cams"], a["maps"], a["valid"])}


def cache_for(split: FerSplit):
    """The landmark cache, or, where it has not been built (`python -m train landmarks`), landmarks
    computed now for just this split's images."""
    from stream_fer.train.landmarks import LandmarkCache, default_cache_path, landmark_images

    if default_cache_path().exists():
        return load_cache()
    log.info("no landmark cache at %s: landmarking the %d evaluated images now", default_cache_path(), len(split))
    from stream_fer.landmarks import Landmarker

    with Landmarker(mode="image", max_faces=1, min_detection_confidence=0.2) as landmarker:
        points, found = landmark_images(split.images, landmarker)
    return LandmarkCache(split.keys, points.astype(np.float16), found)


def class_mean_figure(arrays: dict, path: Path) -> Path:
    """Per class (rows): mean attention, mean CAM of the true class, mean true AU map, side by side."""
    from PIL import Image, ImageDraw

    cell, pad = 96, 4
    labels, valid = arrays["labels"], arrays["valid"]
    rows = [k for k in range(NUM_CLASSES) if CLASS_NAMES[k] != "neutral"]
    canvas = Image.new("RGB", (110 + 3 * (cell + pad), 24 + len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("attention", "CAM", "AU map")):
        draw.text((110 + c * (cell + pad) + 20, 6), title, fill="black")
    import matplotlib

    colormap = matplotlib.colormaps["inferno"]
    for r, k in enumerate(rows):
        sel = (labels == k) & valid
        y0 = 24 + r * (cell + pad)
        draw.text((6, y0 + cell // 2), f"{CLASS_NAMES[k]} ({sel.sum()})", fill="black")
        if not sel.any():
            continue
        panels = (arrays["attention"][sel].mean(0), arrays["cams"][sel, k].mean(0), arrays["maps"][sel].mean(0))
        for c, panel in enumerate(panels):
            p = panel.astype(np.float32)
            p = (p - p.min()) / max(float(p.max() - p.min()), 1e-8)
            rgb = (colormap(p)[:, :, :3] * 255).astype(np.uint8)
            tile = Image.fromarray(rgb).resize((cell, cell), Image.BILINEAR)
            canvas.paste(tile, (110 + c * (cell + pad), y0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def format_report(metrics: dict) -> str:
    lines = [f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  macro_f1={metrics['macro_f1']:.4f}  "
             f"att_cos={_fmt(metrics['att_cos'])}  cam_cos={_fmt(metrics['cam_cos'])}",
             f"{'class':<10} {'n':>5} {'recall':>7} {'att_cos':>8} {'cam_cos':>8}"]
    for name, c in metrics["per_class"].items():
        lines.append(f"{name:<10} {c['n']:>5} {c['recall']:>7.3f} {_fmt(c['att_cos']):>8} {_fmt(c['cam_cos']):>8}")
    lines.append("confusion (rows = true, columns = predicted, order as above):")
    lines += ["  " + " ".join(f"{v:>5}" for v in row) for row in metrics["confusion"]]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def register(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a checkpoint on a FER+ split")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint to evaluate (not with --product-path)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--json", type=Path, help="write the metrics here")
    parser.add_argument("--figure", type=Path, help="save per-class mean attention / CAM / AU map as a PNG")
    parser.add_argument("--data", help="ferplus.tar.gz or its extracted folder")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    parser.add_argument("--sample", type=int, default=0,
                        help="also record metrics on the first N images under 'sample' (checked by the tests)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--product-path", action="store_true",
                        help="run each image the way the product does: MediaPipe landmarks on the upscaled image, "
                             "aligned crop, the exported engine (train/product_path.py; cached)")
    parser.add_argument("--model-dir", type=Path, help="with --product-path: the exported model folder "
                                                       "(default: engines/default)")
    parser.add_argument("--crop-only", action="store_true",
                        help="with --product-path: the crop alone, not averaged with its mirror image as the "
                             "analyzer reads a face (before session 6 it read the crop alone)")
    parser.add_argument("--mirror-below", type=float, default=None,
                        help="with --product-path: read a face's mirror image where its crop's top probability is "
                             "below this (default: the analyzer's, stream_fer.reading.MIRROR_BELOW; 1: every face)")
    parser.add_argument("--inputs", choices=INPUTS,
                        help="without --product-path: the raw 48 x 48 FER+ images, or each face as the product's "
                             "aligned crop (train/aligned.py); default: what the checkpoint was trained on")
    parser.set_defaults(handler=_eval)


def _eval_product_path(args) -> int:
    from stream_fer.train.product_path import product_path_metrics, run_split

    split = load_ferplus(args.data)[args.split]
    if args.limit:
        split = split.subset(slice(0, args.limit))
    from stream_fer.reading import MIRROR_BELOW, check_mirror_below

    below = MIRROR_BELOW if args.mirror_below is None else check_mirror_below(args.mirror_below)
    out = run_split(split, args.model_dir, mirror=not args.crop_only, mirror_below=below)
    metrics = {"model_dir": str(args.model_dir or "engines/default"), "split": args.split,
               "mirror": not args.crop_only, **({"mirror_below": below} if not args.crop_only else {}),
               **product_path_metrics(out)}
    if not args.crop_only:
        metrics["mirror_read"] = float(out.mirror_read()[out.found].mean()) if out.found.any() else 0.0
    print(f"product path: faces found on {metrics['labelled_found']}/{metrics['labelled']} labelled images "
          f"({metrics['coverage']:.1%}); metrics over those:")
    print(format_report(metrics))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")
    return 0


def trained_inputs(state: dict) -> str:
    """The inputs a checkpoint was trained on (`fit --inputs`); checkpoints from before the option: raw."""
    return (state.get("fit_config") or {}).get("inputs", "raw")


def _eval(args) -> int:
    if args.product_path:
        return _eval_product_path(args)
    if args.checkpoint is None:
        raise StreamFerError("eval needs --checkpoint (or --product-path to evaluate the exported engine)")
    model, state = load_model(args.checkpoint, args.device)
    inputs = args.inputs or trained_inputs(state)
    split = load_ferplus(args.data)[args.split]
    if args.limit:
        split = split.subset(slice(0, args.limit))
    if inputs == "aligned":
        split, cache = aligned_splits({args.split: split}, names=(args.split,))
        split = split[args.split]
    else:
        cache = cache_for(split)
    metrics, arrays = evaluate_split(model, split, cache, args.device)
    metrics = {"checkpoint": args.checkpoint.name, "split": args.split, "inputs": inputs, **metrics}
    if args.sample:
        metrics["sample"] = sample_metrics(arrays, args.sample)
    print(format_report(metrics))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")
    if args.figure:
        class_mean_figure(arrays, args.figure)
    return 0
