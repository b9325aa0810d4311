"""Training on what the product feeds the engine (issue 16, point 2): each FER+ face as the product's aligned crop.

The product never shows the engine a raw FER+ image: it finds the landmarks on the upscaled image and cuts
an aligned crop (stream_fer.align). `--inputs aligned` trains and validates on those crops, taken from the
product path's faces cache (train/product_path.split_faces: MediaPipe once per split, shared with every
product-path evaluation), and draws each face's AU map from the landmarks in crop pixels, exactly as the
product-path evaluation draws it. A face the product does not find keeps its raw image and has no AU map, as
it has none in the raw landmark cache (the same detection attempts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_fer.train.data import IMAGE_SIZE, FerSplit
from stream_fer.train.landmarks import LandmarkCache

INPUTS = ("raw", "aligned")


def aligned_split(split: FerSplit, faces: dict[str, np.ndarray]) -> tuple[FerSplit, LandmarkCache]:
    """The split with each found face replaced by its aligned crop, and the crops' landmarks as a cache."""
    found = faces["found"]
    if not np.array_equal(faces["keys"], split.keys):
        raise ValueError(f"the faces cache does not belong to split {split.name}")
    images = np.where(found[:, None, None], faces["crops"], split.images)
    points = np.where(found[:, None, None], faces["crop_points"], np.nan).astype(np.float16)
    return (FerSplit(f"{split.name}-aligned", split.keys, images, split.votes),
            LandmarkCache(split.keys, points, found))


def aligned_splits(splits: dict[str, FerSplit], names=("train", "valid"),
                   landmarker_path=None) -> tuple[dict[str, FerSplit], LandmarkCache]:
    """The named splits as the product sees them (the others unchanged), and one landmark cache for them all."""
    from stream_fer.model_files import resolve_landmarker
    from stream_fer.train.product_path import split_faces

    lm_path = Path(resolve_landmarker(landmarker_path))
    out, caches = dict(splits), []
    for name in names:
        out[name], cache = aligned_split(splits[name], split_faces(splits[name], lm_path, IMAGE_SIZE))
        caches.append(cache)
    merged = LandmarkCache(np.concatenate([c.keys for c in caches]), np.concatenate([c.points for c in caches]),
                           np.concatenate([c.found for c in caches]))
    return out, merged
