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
    polys = np.round(ellipse_polygons(placed)).astype(np.int32)
    for au, s in zip(aus, slices):
        cv2.polylines(canvas, list(polys[s]), True, au_colour(au.number), thickness, cv2.LINE_AA)
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
