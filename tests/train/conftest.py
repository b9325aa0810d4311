"""Fixtures for the training tests: a small slice of the real FER+ data with real MediaPipe landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from stream_fer.train.paths import ferplus_source


@pytest.fixture(scope="session")
def ferplus_splits():
    source = ferplus_source()
    if not source.exists():
        pytest.skip(f"FER+ data not found at {source} (set STREAM_FER_FERPLUS or STREAM_FER_SHARED)")
    from stream_fer.train.data import load_ferplus

    return load_ferplus(source)


@pytest.fixture(scope="session")
def small_splits(ferplus_splits):
    """The first 128 labelled training images and the first 64 labelled validation images."""
    out = {}
    for name, n in (("train", 128), ("valid", 64), ("test", 64)):
        split = ferplus_splits[name]
        idx = np.flatnonzero(split.labels >= 0)[:n]
        out[name] = split.subset(idx)
    return out


@pytest.fixture(scope="session")
def small_cache(small_splits, landmarker_model):
    """A real landmark cache for the small slice (MediaPipe on the upscaled images)."""
    from stream_fer.landmarks import Landmarker
    from stream_fer.train.landmarks import LandmarkCache, landmark_images

    keys = np.concatenate([s.keys for s in small_splits.values()])
    images = np.concatenate([s.images for s in small_splits.values()])
    with Landmarker(landmarker_model, mode="image", max_faces=1, min_detection_confidence=0.2) as lm:
        points, found = landmark_images(images, lm)
    return LandmarkCache(keys, points.astype(np.float16), found)

