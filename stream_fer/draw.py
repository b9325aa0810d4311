"""Drawing helpers shared by the overlay renderer and the tools: AU region outlines with labels."""

from __future__ import annotations

import cv2
import numpy as np

from stream_fer.face.action_units import ActionUnit
from stream_fer.face.au_maps import place_aus
from stream_fer.face.geometry import Ellipses, ellipse_polygons

# One colour per AU number (RGB), spread around the hue circle so neighbours differ.
_PALETTE = {n: tuple(int(c) for c in cv2.cvtColor(np.uint8([[[int(i * 180 / 18) % 180, 220, 255]]]),
                                                   cv2.COLOR_HSV2RGB)[0, 0])
            for i, n in enumerate((1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 17, 20, 23, 24, 25, 26, 27))}


_SHIFT = 4  # fractional bits of a thick outline's band vertices (outline_au_regions)
_SUBPIXEL = float(1 << _SHIFT)


def au_colour(number: int) -> tuple[int, int, int]:
    return _PALETTE.get(number, (255, 255, 255))


def outline_au_regions(canvas: np.ndarray, points: np.ndarray, aus: tuple[ActionUnit, ...],
                       thickness: int = 1) -> list[Ellipses]:
    """Outline each AU's region(s) on `canvas` in place (OpenCV clips at the edges); returns each AU's
    ellipses, placed once for all AUs, for the caller's labels."""
    aus = tuple(aus)
    if not aus:
        return []
    placed, slices = place_aus(points, aus)
    if thickness <= 1:
        polys = np.round(ellipse_polygons(placed)).astype(np.int32)
        for au, s in zip(aus, slices):
            cv2.polylines(canvas, list(polys[s]), True, au_colour(au.number), thickness, cv2.LINE_AA)
    else:
        # A thick outline as the band between two ellipses half the thickness outside and inside, filled in one
        # call per AU (OpenCV fills several contours even-odd): a third of the cost of stroking the polygon,
        # whose anti-aliased thick segments are each a filled polygon with round caps.
        half = thickness / 2 + 0.25  # about the ink of the stroked outline (its AA fringe is wider)
        outer = ellipse_polygons(Ellipses(placed.centres, placed.semi_axes + half, placed.angles))
        inner = ellipse_polygons(Ellipses(placed.centres, np.maximum(placed.semi_axes - half, 0.0), placed.angles))
        bands = np.round(np.stack([outer, inner], axis=1) * _SUBPIXEL).astype(np.int32)  # (E, 2, n, 2)
        for au, s in zip(aus, slices):
            cv2.fillPoly(canvas, list(bands[s].reshape(-1, *bands.shape[2:])), au_colour(au.number), cv2.LINE_AA,
                         shift=_SHIFT)
    return [placed.take(s) for s in slices]



def draw_au_regions(rgb: np.ndarray, points: np.ndarray, aus: tuple[ActionUnit, ...],
                    label: str | None = "code", thickness: int = 1, font_scale: float = 0.35) -> np.ndarray:
    """Outline each AU's region(s) on a copy of `rgb`; label each with its code ("AU12"), its code and FACS
    name (label="name"), or not at all (label=None: the caller places the labels)."""
    out = rgb.copy()
    per_au = outline_au_regions(out, points, aus, thickness)
    if label is None:
        return out
    for au, ellipses in zip(aus, per_au):
        colour = au_colour(au.number)
        text = au.code if label == "code" else f"{au.code} {au.name}"
        first = ellipses[0]
        org = (int(first.centre[0] - first.semi_axes[0]), int(first.centre[1] - first.semi_axes[1]) - 2)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness, cv2.LINE_AA)
    return out
