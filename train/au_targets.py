"""AU maps for training and evaluation: each image's true-class map rendered from its cached landmarks.

Maps are rendered once per split at the image size (48 x 48) and cached beside the landmark cache;
geometric augmentation then moves image and map together (train/augment.py). Samples without a map
(neutral, no landmarks, no valid label) carry valid=False and are left out of the alignment loss."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from stream_fer.face.au_maps import expression_map
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.train.data import IMAGE_SIZE, FerSplit
from stream_fer.train.landmarks import LandmarkCache
from stream_fer.train.paths import train_cache


def render_maps(points: np.ndarray, found: np.ndarray, labels: np.ndarray, size: int = IMAGE_SIZE):
    """(maps float16 (N, size, size), valid bool (N,)) for landmarks in 48-px coordinates."""
    maps = np.zeros((len(labels), size, size), dtype=np.float16)
    valid = np.zeros(len(labels), dtype=bool)
    for i, (pts, ok, label) in enumerate(zip(points, found, labels)):
        if not ok or label < 0:
            continue
        m = expression_map(pts, IMAGE_SIZE, CLASS_NAMES[label], size)
        if m is not None:
            maps[i] = m
            valid[i] = True
    return maps, valid


def _vocabulary_fingerprint() -> str:
    """Changes whenever the AU table, the codebook or the map rendering changes, so cached maps follow."""
    from stream_fer.face import action_units, au_maps

    return repr((action_units.ACTION_UNITS, action_units.EXPRESSION_AUS, au_maps.BLUR_SIGMA_IOD))


def split_maps(split: FerSplit, cache: LandmarkCache, labels: np.ndarray | None = None, size: int = IMAGE_SIZE):
    """Maps for a split's true labels, cached on disk keyed by the keys, labels and landmarks."""
    labels = split.labels if labels is None else labels
    points, found = cache.lookup(split.keys)
    digest = hashlib.sha1(_vocabulary_fingerprint().encode())
    for arr in (split.keys.astype("U"), labels, np.nan_to_num(points).astype(np.float16), found):
        digest.update(np.ascontiguousarray(arr).tobytes())
    path = train_cache() / f"au_maps-{split.name}-{size}-{digest.hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as z:
            return _finite(z["maps"], z["valid"])
    maps, valid = render_maps(points, found, labels, size)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")  # two evaluations may render at once
    np.savez_compressed(tmp, maps=maps, valid=valid)
    tmp.replace(path)
    return _finite(maps, valid)


def _finite(maps: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps with a non-finite pixel (degenerate landmarks: one FER+ training face has both eyes on one
    point, so the blur width is 0) count as no map; one NaN in the loss would ruin every weight."""
    bad = ~np.isfinite(maps).all(axis=(1, 2))
    if bad.any():
        maps, valid = maps.copy(), valid & ~bad
        maps[bad] = 0
    return maps, valid
