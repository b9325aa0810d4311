"""Alignment to the training frame: a similarity transform that maps a face's landmarks onto the
template (the mean FER+ training layout, 48 x 48 px), so run-time crops look like the training data."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

TEMPLATE_PATH = Path(__file__).resolve().parent / "data" / "template48.npy"
TEMPLATE_SIZE = 48

# Stable points for the fit: eye corners, brows, nose, mouth corners, chin, jaw and face outline.
# Expression moves the lips and brows, so the fit leans on the rigid parts of the face.
ALIGN_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 98, 327, 61, 291, 152, 10, 234, 454,
                127, 356, 93, 323, 132, 361, 58, 288, 172, 397, 70, 300, 105, 334)


@lru_cache(maxsize=1)
def template() -> np.ndarray:
    """(478, 2) float32 mean layout in 48-px coordinates."""
    return np.load(TEMPLATE_PATH, allow_pickle=False)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) mapping src onto dst, no
    reflection. In 2-D it has a closed form: with both point sets centred, the matrix is [[a, -b], [b, a]]
    with a = sum(s . d) / sum(|s|^2), b = sum(s x d) / sum(|s|^2) (the same optimum as Umeyama's SVD
    method, a tenth of its cost)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var = max(float((s0 * s0).sum()), 1e-12)
    a = float((s0 * d0).sum()) / var
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / var
    matrix = np.empty((2, 3))
    matrix[:, :2] = ((a, -b), (b, a))
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def alignment_matrix(points: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The 2x3 matrix taking image pixel coordinates to an aligned size x size crop."""
    idx = list(ALIGN_POINTS)
    dst = template()[idx] * (size / TEMPLATE_SIZE)
    return similarity_transform(np.asarray(points)[idx, :2], dst)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return pts @ matrix[:, :2].T + matrix[:, 2]
