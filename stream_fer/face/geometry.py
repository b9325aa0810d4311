"""Face-relative geometry on the MediaPipe 478-point mesh: the face's own axes and scale, and AU
region ellipses placed in image coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from stream_fer.face.action_units import EllipseRegion

NUM_LANDMARKS = 478
RIGHT_EYE_CORNERS = (33, 133)  # subject's right eye: outer, inner
LEFT_EYE_CORNERS = (263, 362)  # subject's left eye: outer, inner


@dataclass(frozen=True)
class FaceFrame:
    """The face's x axis (subject's right eye -> left eye), y axis (down the face) and scale (IOD, px)."""

    x_axis: np.ndarray
    y_axis: np.ndarray
    iod: float


@dataclass(frozen=True)
class Ellipse:
    centre: tuple[float, float]
    semi_axes: tuple[float, float]  # pixels
    angle: float  # radians, image coordinates


_EYE_CORNERS = list(RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS)


def face_frame(points: np.ndarray) -> FaceFrame:
    # only the four eye corners, converted (not all 478 points: this runs several times per face and frame)
    c = np.asarray(np.asarray(points)[_EYE_CORNERS, :2], dtype=np.float64)
    right_eye, left_eye = (c[0] + c[1]) / 2, (c[2] + c[3]) / 2  # the mean of each eye's two corners
    delta = left_eye - right_eye
    iod = float(np.hypot(*delta))
    if not np.isfinite(iod) or iod < 1e-6:
        raise ValueError("degenerate landmarks: the eyes coincide")
    x_axis = delta / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])  # x rotated +90 deg: points down the face in image coords
    return FaceFrame(x_axis, y_axis, iod)


@dataclass(frozen=True)
class Ellipses:
    """Several ellipses as arrays, for placing and filling them in one vectorised pass."""

    centres: np.ndarray  # (E, 2) pixels
    semi_axes: np.ndarray  # (E, 2) pixels
    angles: np.ndarray  # (E,) radians, image coordinates

    @classmethod
    def of(cls, ellipses) -> Ellipses:
        if isinstance(ellipses, Ellipses):
            return ellipses
        ellipses = list(ellipses)
        return cls(np.array([e.centre for e in ellipses], dtype=np.float64).reshape(-1, 2),
                   np.array([e.semi_axes for e in ellipses], dtype=np.float64).reshape(-1, 2),
                   np.array([e.angle for e in ellipses], dtype=np.float64).reshape(-1))

    def __len__(self) -> int:
        return len(self.angles)

    def __getitem__(self, i: int) -> Ellipse:
        (cx, cy), (a, b) = self.centres[i], self.semi_axes[i]
        return Ellipse((float(cx), float(cy)), (float(a), float(b)), float(self.angles[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def take(self, part: slice) -> Ellipses:
        return Ellipses(self.centres[part], self.semi_axes[part], self.angles[part])


@lru_cache(maxsize=256)
def _region_table(regions: tuple[EllipseRegion, ...]):
    """The regions' constants as arrays: an averaging matrix (R, V) whose rows take the mean of each
    region's anchors, the mirror signs, offsets, angles (radians) and semi-axes (IOD units)."""
    width = 1 + max((max(r.anchors) for r in regions), default=0)
    averaging = np.zeros((len(regions), width))
    for i, region in enumerate(regions):
        np.add.at(averaging[i], list(region.anchors), 1.0 / len(region.anchors))
    sign = np.array([-1.0 if r.mirrored else 1.0 for r in regions])
    offsets = np.array([r.offset for r in regions], dtype=np.float64).reshape(-1, 2)
    angles = np.deg2rad([r.angle_deg for r in regions])
    semi = np.array([r.semi_axes for r in regions], dtype=np.float64).reshape(-1, 2)
    for a in (averaging, sign, offsets, angles, semi):
        a.setflags(write=False)
    return averaging, sign, offsets, angles, semi


def place_regions(regions, points: np.ndarray, frame: FaceFrame) -> Ellipses:
    """AU regions as ellipses in the landmarks' pixel coordinates, all at once: each centre is the mean of
    its anchors moved by its offset along the face's axes (mirrored for the subject's left side), its
    semi-axes scale with the inter-ocular distance, its angle turns with the face."""
    averaging, sign, offsets, angles, semi = _region_table(regions if isinstance(regions, tuple) else tuple(regions))
    pts = np.asarray(points, dtype=np.float64)[: averaging.shape[1], :2]
    shift = (sign * offsets[:, 0])[:, None] * frame.x_axis + offsets[:, 1:2] * frame.y_axis
    centres = averaging @ pts + frame.iod * shift
    face_angle = float(np.arctan2(frame.x_axis[1], frame.x_axis[0]))
    return Ellipses(centres, semi * frame.iod, face_angle + sign * angles)


@lru_cache(maxsize=8)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def ellipse_polygons(ellipses, n: int = 32) -> np.ndarray:
    """Points on each ellipse's outline, (E, n, 2) float32, for drawing."""
    e = Ellipses.of(ellipses)
    cos_t, sin_t = _unit_circle(n)
    x = e.semi_axes[:, 0, None] * cos_t
    y = e.semi_axes[:, 1, None] * sin_t
    c, s = np.cos(e.angles)[:, None], np.sin(e.angles)[:, None]
    return np.stack([e.centres[:, 0, None] + c * x - s * y, e.centres[:, 1, None] + s * x + c * y],
                    axis=2).astype(np.float32)


def fill_ellipses(ellipses, height: int, width: int) -> np.ndarray:
    """(E, height, width) boolean masks of the pixels whose centres lie inside each ellipse, in one
    vectorised pass. An ellipse smaller than a pixel keeps the pixel under its centre, if on the grid."""
    if not len(ellipses):
        return np.zeros((0, height, width), dtype=bool)
    e = Ellipses.of(ellipses)
    centres = e.centres
    a2, b2 = (np.maximum(e.semi_axes, 1e-6) ** 2).T
    c, s = np.cos(e.angles), np.sin(e.angles)
    # The ellipse as a quadratic form q(dx, dy) = A dx^2 + B dx dy + C dy^2 <= 1. dx varies along the
    # columns only and dy along the rows only, so only the cross term needs the full (E, H, W) grid.
    A, B, C = c * c / a2 + s * s / b2, 2 * c * s * (1 / a2 - 1 / b2), s * s / a2 + c * c / b2
    dx = (np.arange(width) + 0.5)[None, :] - centres[:, 0, None]  # (E, W) pixel centres
    dy = (np.arange(height) + 0.5)[None, :] - centres[:, 1, None]  # (E, H)
    q = (B[:, None] * dy)[:, :, None] * dx[:, None, :]
    q += (A[:, None] * dx * dx)[:, None, :]
    q += (C[:, None] * dy * dy)[:, :, None]
    inside = q <= 1.0
    for i in np.flatnonzero(~inside.any(axis=(1, 2))):
        col, row = int(np.floor(centres[i, 0])), int(np.floor(centres[i, 1]))
        if 0 <= row < height and 0 <= col < width:
            inside[i, row, col] = True
    return inside


def fill_ellipse(ellipse: Ellipse, height: int, width: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the ellipse."""
    return fill_ellipses([ellipse], height, width)[0]
