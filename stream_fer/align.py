"""Aligned face crops for the classifier, and the way back from crop space to the frame.

A crop is the face warped by a similarity transform onto the mean FER+ landmark layout
(stream_fer.face.alignment), converted to grayscale the way FER2013 was made: luminance
(ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B), uint8.

Large faces are shrunk with area averaging before the final warp, so a 1080p face does not alias into
a 48-px crop (a bilinear warp alone samples only 4 source pixels per output pixel).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from stream_fer.face.alignment import alignment_matrix

log = logging.getLogger(__name__)

# Below this scale (crop px per frame px) the face is first shrunk with INTER_AREA to twice the crop's
# resolution; the bilinear warp then only ever halves, which it does without visible aliasing.
_PREFILTER_BELOW = 0.5


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance (BT.601 luma) of an RGB uint8 image, as uint8."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def matrix_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a 2x3 similarity (output px per input px)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:, :2]))))


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix, as 2x3."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def crop_corners_in_frame(matrix: np.ndarray, size: int) -> np.ndarray:
    """(4, 2) frame coordinates of the corners of the size x size crop that `matrix` maps onto."""
    inv = invert_affine(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    return corners @ inv[:, :2].T + inv[:, 2]


def frame_roi(matrix: np.ndarray, size: int, frame_shape: tuple[int, ...], margin: int = 2):
    """(x0, y0, x1, y1) integer bounds of the crop's footprint in the frame, clipped to the frame; None when
    the footprint lies entirely outside it."""
    h, w = frame_shape[:2]
    corners = crop_corners_in_frame(matrix, size)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + margin
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int, gray: bool = False) -> np.ndarray:
    """Warp `image` (frame pixels, any channel count) into a size x size crop with `matrix` (frame -> crop).
    Reads only the crop's footprint; edges beyond the frame repeat the border pixels. gray=True: the luminance
    crop of an RGB image, converted before the warp (a third of the filtering work; within 2 grey levels of
    converting after it)."""
    m = np.asarray(matrix, dtype=np.float64)
    roi = frame_roi(m, size, image.shape, margin=3)
    if roi is None:  # the face is entirely off the frame: nothing to read
        shape = (size, size) + (() if gray else image.shape[2:])
        return np.zeros(shape, dtype=image.dtype)
    x0, y0, x1, y1 = roi
    patch = image[y0:y1, x0:x1]
    if gray:
        patch = to_gray(patch)
    # Frame -> patch coordinates: shift by the patch origin.
    m = m.copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    scale = matrix_scale(m)
    if scale < _PREFILTER_BELOW:
        f = 2.0 * scale  # shrink so the remaining warp has a scale of 0.5
        pw, ph = max(1, round(patch.shape[1] * f)), max(1, round(patch.shape[0] * f))
        fx, fy = pw / patch.shape[1], ph / patch.shape[0]
        patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
        # Pixel centres: shrunk x' = (x + 0.5) * fx - 0.5, so x = (x' + 0.5) / fx - 0.5.
        back = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        m = m @ back
    return cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_faces(rgb: np.ndarray, points: Sequence[np.ndarray],
                size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Aligned grayscale crops (N, size, size) uint8 and their matrices (N, 2, 3) frame -> crop, for the
    faces whose landmarks (478, 2+) are in `points`."""
    n = len(points)
    crops = np.zeros((n, size, size), dtype=np.uint8)
    matrices = np.zeros((n, 2, 3), dtype=np.float64)
    for i, pts in enumerate(points):
        matrices[i] = alignment_matrix(pts, size=size)
        crops[i] = warp_crop(rgb, matrices[i], size, gray=True)
    return crops, matrices


def crop_map_to_frame(crop_map: np.ndarray, matrix: np.ndarray, crop_size: int, frame_shape: tuple[int, ...],
                      roi: tuple[int, int, int, int] | None = None, smooth: bool = True) -> np.ndarray | None:
    """A map defined over the crop (h x w cells covering the crop_size x crop_size crop; float) warped back
    into frame coordinates over `roi` (x0, y0, x1, y1; default: the crop's footprint). Returns the
    (y1 - y0, x1 - x0) float32 patch (zero outside the crop), or None when the footprint is off the frame.

    With smooth=True a coarse map is first upsampled bicubically to the crop resolution, so a 12 x 12
    attention map shows as a smooth field rather than tiles."""
    if roi is None:
        roi = frame_roi(matrix, crop_size, frame_shape)
        if roi is None:
            return None
    x0, y0, x1, y1 = roi
    src = np.asarray(crop_map, dtype=np.float32)
    mh, mw = src.shape
    if smooth and (mh < crop_size or mw < crop_size):
        src = cv2.resize(src, (crop_size, crop_size), interpolation=cv2.INTER_CUBIC)
        mh, mw = src.shape
    # Frame px -> crop px (matrix) -> map cells (pixel centres: c = (x + 0.5) * mw / S - 0.5).
    to_map = np.array([[mw / crop_size, 0, 0.5 * mw / crop_size - 0.5],
                       [0, mh / crop_size, 0.5 * mh / crop_size - 0.5], [0, 0, 1]])
    m = to_map @ np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    m = m[:2]
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)  # patch px -> frame px first
    return cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
