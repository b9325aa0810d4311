"""AU region outlines: drawn on each region's ellipse, as a band of the asked thickness, nowhere else."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream_fer.draw import au_colour, outline_au_regions
from stream_fer.face.action_units import aus_for
from stream_fer.face.geometry import ellipse_polygons


@pytest.mark.parametrize("thickness", [1, 2, 3])
def test_outlines_follow_each_region_at_the_asked_thickness(smile, thickness):
    """Thick outlines are filled bands (cheaper than stroking): on every ellipse the band covers the outline, the
    ellipse's centre and the frame far from any region stay untouched, and the band carries about the ink of
    an OpenCV polyline of that thickness."""
    canvas = np.zeros((smile.rgb.shape[0] * 2, smile.rgb.shape[1] * 2, 3), np.uint8)  # regions a bit larger
    points = smile.points * np.float32(2)
    aus = aus_for("happiness")
    per_au = outline_au_regions(canvas, points, aus, thickness=thickness)
    assert len(per_au) == len(aus)
    ink = canvas.max(axis=2) > 0
    stroked = np.zeros(canvas.shape[:2], np.uint8)
    for au, ellipses in zip(aus, per_au):
        colour = np.array(au_colour(au.number))
        for poly in ellipse_polygons(ellipses, n=64):
            on = np.round(poly).astype(int)
            on = on[(on[:, 0] >= 0) & (on[:, 1] >= 0) & (on[:, 0] < canvas.shape[1]) & (on[:, 1] < canvas.shape[0])]
            covered = canvas[on[:, 1], on[:, 0]]
            assert (covered.max(axis=1) > 0).mean() > 0.9, au.code
            assert np.abs(covered.astype(int) - colour).max(axis=1).min() < 40  # somewhere in its own colour
        for e in ellipses:
            if min(e.semi_axes) > thickness + 2:
                assert not ink[int(round(e.centre[1])), int(round(e.centre[0]))], au.code
        polys = np.round(ellipse_polygons(ellipses)).astype(np.int32)
        cv2.polylines(stroked, list(polys), True, 255, thickness, cv2.LINE_AA)
    assert 0.8 < canvas.max(axis=2).sum() / stroked.sum() < 1.25
    near = cv2.dilate(stroked, np.ones((9, 9), np.uint8)) > 0
    assert not ink[~near].any(), "drew away from the regions"
