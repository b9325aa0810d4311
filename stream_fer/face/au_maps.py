"""AU maps: where an expression's Action Units are on a particular face, as an image-sized heatmap.

An expression's map is the pixel-wise max over its AU regions, softened by a Gaussian, then min-max
normalised to [0, 1] (METHOD.md). The blur is sized by the face (its inter-ocular distance on the map),
which scales with the map size when the map is the face crop. Neutral, missing landmarks,
or regions entirely off the map give no map (None): such samples are left out of the alignment loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from stream_fer.face.action_units import aus_for
from stream_fer.face.geometry import Ellipses, FaceFrame, face_frame, fill_ellipses, place_regions

# Gaussian sigma in units of the inter-ocular distance as drawn on the map. On an aligned 48-px crop
# (IOD about 18 px) that is about 4% of the map size, and it stays face-sized on a full frame.
BLUR_SIGMA_IOD = 0.1


def _size(out_size) -> tuple[int, int]:
    """(width, height) from an int or a pair."""
    if isinstance(out_size, int):
        return out_size, out_size
    w, h = out_size
    return int(w), int(h)


def _scaled(points: np.ndarray, image_size, out_size) -> np.ndarray:
    src_w, src_h = _size(image_size)
    dst_w, dst_h = _size(out_size)
    pts = np.asarray(points, dtype=np.float64)[:, :2].copy()
    pts[:, 0] *= dst_w / src_w
    pts[:, 1] *= dst_h / src_h
    return pts


@dataclass(frozen=True)
class _Layout:
    """The regions of a tuple of AUs, flattened in order, and each AU's slice of them."""

    aus: tuple
    regions: tuple
    slices: tuple[slice, ...]
    firsts: np.ndarray | None  # each AU's first region; None if an AU has no region
    extras: tuple[tuple[int, int], ...]  # (AU index, region index) of every further region


_LAYOUTS: dict[tuple[int, ...], _Layout] = {}


class _Regions(tuple):
    """A tuple of regions that hashes once (place_regions' table cache hashes it on every call, and
    hashing 26 frozen dataclasses costs more than looking the table up)."""

    def __new__(cls, items):
        self = super().__new__(cls, items)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self) -> int:
        return self._hash


def _layout(aus: tuple) -> _Layout:
    """Cached per tuple of AU objects (by identity: hashing their regions costs more than placing them)."""
    key = tuple(map(id, aus))
    layout = _LAYOUTS.get(key)
    if layout is None or any(a is not b for a, b in zip(layout.aus, aus)):
        counts = [len(au.regions) for au in aus]
        bounds = np.cumsum([0] + counts).tolist()
        slices = tuple(slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]))
        firsts = np.asarray(bounds[:-1], dtype=np.intp) if all(counts) else None
        extras = tuple((i, j) for i, s in enumerate(slices) for j in range(s.start + 1, s.stop))
        layout = _Layout(aus, _Regions(r for au in aus for r in au.regions), slices, firsts, extras)
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


def place_aus(points: np.ndarray, aus, frame: FaceFrame | None = None) -> tuple[Ellipses, list[slice]]:
    """The regions of all `aus` as ellipses in the coordinates of `points`, placed in one pass, and each
    AU's slice of them."""
    layout = _layout(tuple(aus))
    placed = place_regions(layout.regions, points, frame or face_frame(points))
    return placed, list(layout.slices)


def region_mask_stack(points: np.ndarray, image_size, aus, out_size) -> np.ndarray:
    """(len(aus), h, w) hard boolean masks at out_size, one per AU in the order of `aus` (the union of its
    regions): the same masks as region_masks, as one array."""
    w, h = _size(out_size)
    pts = _scaled(points, image_size, out_size)
    layout = _layout(tuple(aus))
    if not layout.aus:
        return np.zeros((0, h, w), dtype=bool)
    filled = fill_ellipses(place_regions(layout.regions, pts, face_frame(pts)), h, w)
    if layout.firsts is None:
        return np.stack([filled[s].any(axis=0) for s in layout.slices])
    masks = filled[layout.firsts]  # a copy; then OR in the AUs' further regions (np.logical_or.reduceat
    for i, j in layout.extras:  # over this axis is 20x slower than these few in-place ORs)
        masks[i] |= filled[j]
    return masks


def region_masks(points: np.ndarray, image_size, aus, out_size) -> dict[int, np.ndarray]:
    """Hard (unblurred) boolean mask per AU at out_size, for per-AU attention shares."""
    aus = tuple(aus)
    return {au.number: m for au, m in zip(aus, region_mask_stack(points, image_size, aus, out_size))}


@lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix applying a 1-D Gaussian with reflected borders along one axis."""
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    j = np.arange(n)[:, None] + offsets[None, :]  # (n, taps) source index of each tap
    # Mirror until inside, the edge pixel repeated (numpy's "symmetric"): period 2n, then fold.
    j = np.mod(j, 2 * n)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), len(offsets)), j.ravel()), np.tile(weights, n))
    matrix.setflags(write=False)
    return matrix


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders."""
    sigma = round(float(sigma), 2)  # a face-relative sigma varies per face: round it so the matrices cache
    if sigma <= 0:  # also a degenerate face's tiny sigma, which rounds to 0 (a Gaussian of width 0 is NaN)
        return image
    h, w = image.shape
    return _blur_matrix(h, sigma) @ image.astype(np.float64) @ _blur_matrix(w, sigma).T


def map_from_masks(masks, iod: float) -> np.ndarray | None:
    """The normalised AU map from hard AU masks on one map (see region_masks): their union, blurred by
    BLUR_SIGMA_IOD inter-ocular distances (`iod` in map pixels), min-max scaled; None if empty or flat."""
    masks = list(masks)
    if not masks:
        return None
    hard = np.any(masks, axis=0).astype(np.float64)
    if not hard.any():
        return None
    soft = gaussian_blur(hard, BLUR_SIGMA_IOD * iod)
    lo, hi = soft.min(), soft.max()
    if hi - lo < 1e-8:
        return None
    return ((soft - lo) / (hi - lo)).astype(np.float32)


def expression_map(points, image_size, expression: str, out_size) -> np.ndarray | None:
    """The normalised AU map of `expression` on the face with landmarks `points` (pixel coordinates of
    an image of `image_size`), rendered at `out_size`; float32 in [0, 1], or None where there is no map."""
    aus = aus_for(expression)
    if not aus or points is None:
        return None
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[0] < 468 or not np.isfinite(pts[:, :2]).all():
        return None
    masks = region_masks(pts, image_size, aus, out_size)
    return map_from_masks(masks.values(), face_frame(_scaled(pts, image_size, out_size)).iod)
