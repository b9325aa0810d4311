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


def face_frame(points: np.ndarray) -> FaceFrame:
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    right_eye = pts[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    left_eye = pts[list(LEFT_EYE_CORNERS)].mean(axis=0)
    delta = left_eye - right_eye
    iod = float(np.hypot(*delta))
    if not np.isfinite(iod) or iod < 1e-6:
        raise ValueError("degenerate landmarks: the eyes coincide")
    x_axis = delta / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])  # x rotated +90 deg: points down the face in image coords
    return FaceFrame(x_axis, y_axis, iod)


def place_region(region: EllipseRegion, points: np.ndarray, frame: FaceFrame) -> Ellipse:
    """An AU region as an ellipse in the landmarks' pixel coordinates."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    sign = -1.0 if region.mirrored else 1.0
    dx, dy = region.offset
    centre = pts[list(region.anchors)].mean(axis=0) + frame.iod * (sign * dx * frame.x_axis + dy * frame.y_axis)
    face_angle = float(np.arctan2(frame.x_axis[1], frame.x_axis[0]))
    angle = face_angle + sign * np.deg2rad(region.angle_deg)
    a, b = region.semi_axes
    return Ellipse((float(centre[0]), float(centre[1])), (a * frame.iod, b * frame.iod), angle)


def ellipse_polygon(ellipse: Ellipse, n: int = 32) -> np.ndarray:
    """Points on the ellipse outline, (n, 2) float32, for drawing."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    a, b = ellipse.semi_axes
    c, s = np.cos(ellipse.angle), np.sin(ellipse.angle)
    x = a * np.cos(t)
    y = b * np.sin(t)
    return np.stack([ellipse.centre[0] + c * x - s * y, ellipse.centre[1] + s * x + c * y], axis=1).astype(
        np.float32
    )


@lru_cache(maxsize=32)
def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def fill_ellipses(ellipses: list[Ellipse], height: int, width: int) -> np.ndarray:
    """(E, height, width) boolean masks of the pixels whose centres lie inside each ellipse, in one
    vectorised pass. An ellipse smaller than a pixel keeps the pixel under its centre, if on the grid."""
    if not ellipses:
        return np.zeros((0, height, width), dtype=bool)
    ys, xs = _pixel_centres(height, width)
    centres = np.array([e.centre for e in ellipses], dtype=np.float32)
    axes = np.maximum(np.array([e.semi_axes for e in ellipses], dtype=np.float32), 1e-6)
    angles = np.array([e.angle for e in ellipses], dtype=np.float32)
    c, s = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    dx = xs[None] - centres[:, 0, None, None]
    dy = ys[None] - centres[:, 1, None, None]
    u = (c * dx + s * dy) / axes[:, 0, None, None]
    v = (-s * dx + c * dy) / axes[:, 1, None, None]
    inside = u * u + v * v <= 1.0
    for i in np.flatnonzero(~inside.any(axis=(1, 2))):
        col, row = int(np.floor(centres[i, 0])), int(np.floor(centres[i, 1]))
        if 0 <= row < height and 0 <= col < width:
            inside[i, row, col] = True
    return inside


def fill_ellipse(ellipse: Ellipse, height: int, width: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the ellipse."""
    return fill_ellipses([ellipse], height, width)[0]
