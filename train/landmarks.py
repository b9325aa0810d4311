"""`python -m train landmarks`: MediaPipe landmarks for every FER+ image, computed once and cached.

Each 48x48 image is upscaled (the detector misses most faces at 48 px) and landmarked in IMAGE mode.
The cache is one compact .npz keyed by image ("<split>/<file>"): points (N, 478, 2) float16 in 48-px
coordinates (NaN where no face was found) and a `found` flag, so misses are recorded, not dropped.
Work is done in chunks written as they finish: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_fer.face.geometry import NUM_LANDMARKS
from stream_fer.train.data import IMAGE_SIZE, load_ferplus
from stream_fer.train.paths import train_cache

log = logging.getLogger(__name__)

CHUNK = 1000


@dataclass(frozen=True)
class LandmarkCache:
    keys: np.ndarray  # (N,) str
    points: np.ndarray  # (N, 478, 2) float16, 48-px coordinates, NaN where not found
    found: np.ndarray  # (N,) bool

    def lookup(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(points float32, found) for the given keys, in their order; unknown keys count as not found."""
        index = {k: i for i, k in enumerate(self.keys)}
        rows = np.array([index.get(k, -1) for k in keys])
        pts = np.full((len(rows), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        ok = rows >= 0
        pts[ok] = self.points[rows[ok]].astype(np.float32)
        found = np.zeros(len(rows), dtype=bool)
        found[ok] = self.found[rows[ok]]
        return pts, found


def default_cache_path() -> Path:
    return train_cache() / "ferplus_landmarks.npz"


def load_cache(path: Path | None = None) -> LandmarkCache:
    path = path or default_cache_path()
    if not path.exists():
        from stream_fer.errors import StreamFerError

        raise StreamFerError(f"landmark cache not found at {path}: run `python -m train landmarks` first")
    with np.load(path, allow_pickle=False) as z:
        return LandmarkCache(z["keys"], z["points"], z["found"])


_worker_landmarker = None


def _init_worker(model_path):
    global _worker_landmarker
    from stream_fer.landmarks import Landmarker

    _worker_landmarker = Landmarker(model_path, mode="image", max_faces=1, min_detection_confidence=0.2)


# Attempts in order, each (upscaled size, padding, equalise histogram, padding fill). The face detector
# prefers some margin around the face; the later attempts rescue low-contrast and tightly cropped faces.
# Measured on 600 training images: 91.5% found by the first attempt, 96.3% after all three.
ATTEMPTS = ((192, 64, False, None), (160, 80, True, 128), (256, 0, True, None))


def _attempt_image(img: np.ndarray, size: int, pad: int, equalise: bool, fill) -> np.ndarray:
    import cv2

    src = cv2.equalizeHist(img) if equalise else img
    big = cv2.resize(src, (size, size), interpolation=cv2.INTER_CUBIC)
    if pad:
        border = cv2.BORDER_REPLICATE if fill is None else cv2.BORDER_CONSTANT
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, border, value=fill or 0)
    return np.repeat(big[:, :, None], 3, axis=2)


def landmark_images(images: np.ndarray, landmarker) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of 48x48 grayscale images with one landmarker; points in 48-px coordinates."""
    points = np.full((len(images), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    for i, img in enumerate(images):
        for size, pad, equalise, fill in ATTEMPTS:
            faces = landmarker.detect(_attempt_image(img, size, pad, equalise, fill))
            if faces:
                points[i] = (faces[0].points[:, :2] - pad) * (IMAGE_SIZE / size)
                found[i] = True
                break
    return points, found


def _work(chunk: tuple[int, np.ndarray]):
    start, images = chunk
    points, found = landmark_images(images, _worker_landmarker)
    return start, points, found


def build_cache(out: Path | None = None, data=None, workers: int = 2, model_path=None) -> LandmarkCache:
    from tqdm import tqdm

    out = out or default_cache_path()
    splits = load_ferplus(data)
    keys = np.concatenate([s.keys for s in splits.values()])
    images = np.concatenate([s.images for s in splits.values()])
    parts = out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    todo = [(start, images[start : start + CHUNK]) for start in range(0, len(images), CHUNK)
            if not (parts / f"{start:06d}.npz").exists()]
    done = len(images) - sum(len(c[1]) for c in todo)
    with tqdm(total=len(images), initial=done, desc="landmarks", unit="img", mininterval=2) as bar:
        if todo:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(model_path,)) as pool:
                for start, points, found in pool.imap_unordered(_work, todo):
                    np.savez(parts / f"{start:06d}.part.npz", points=points.astype(np.float16), found=found)
                    (parts / f"{start:06d}.part.npz").replace(parts / f"{start:06d}.npz")
                    bar.update(len(found))
                    bar.set_postfix(found=f"{found.mean():.1%}")
    chunks = [np.load(parts / f"{start:06d}.npz") for start in range(0, len(images), CHUNK)]
    points = np.concatenate([c["points"] for c in chunks])
    found = np.concatenate([c["found"] for c in chunks])
    tmp = out.with_suffix(".part.npz")
    np.savez_compressed(tmp, keys=keys, points=points, found=found)
    tmp.replace(out)
    for p in parts.glob("*.npz"):
        p.unlink()
    parts.rmdir()
    log.info("landmarks: %d/%d faces found (%.1f%%)", found.sum(), len(found), 100 * found.mean())
    return LandmarkCache(keys, points, found)
