"""The face vocabulary: class names, the expression -> AU codebook, AU regions, AU maps and alignment.
The anatomy checks run on real MediaPipe landmarks of the shared stills."""

from __future__ import annotations

import numpy as np
import pytest

from stream_fer.face import (
    ACTION_UNITS,
    CLASS_NAMES,
    EXPRESSION_AUS,
    NUM_CLASSES,
    alignment,
    aus_for,
    class_index,
    expression_map,
    region_masks,
)
from stream_fer.face.action_units import blendshapes_for
from stream_fer.face.geometry import NUM_LANDMARKS, face_frame

MAP_SIZE = 96  # face-crop maps for the anatomy checks


# --- classes and codebook -------------------------------------------------------------------------------

def test_classes_are_the_first_seven_ferplus_columns_in_order():
    assert CLASS_NAMES == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
    assert NUM_CLASSES == 7
    assert [class_index(name) for name in CLASS_NAMES] == list(range(7))
    with pytest.raises(ValueError, match="contempt"):
        class_index("contempt")


def test_codebook_is_the_papers_figure_2():
    assert EXPRESSION_AUS == {
        "neutral": (),
        "happiness": (6, 12, 25),
        "surprise": (1, 2, 5, 26, 27),
        "sadness": (1, 4, 6, 15, 17),
        "anger": (4, 5, 7, 10, 17, 23, 24, 25, 26),
        "disgust": (9, 10, 16, 17, 25, 26),
        "fear": (1, 2, 4, 5, 20, 25, 26, 27),
    }
    assert set(EXPRESSION_AUS) == set(CLASS_NAMES)
    assert [au.number for au in aus_for("happiness")] == [6, 12, 25]
    with pytest.raises(ValueError):
        aus_for("contempt")


def test_every_au_is_described_as_data():
    used = {n for numbers in EXPRESSION_AUS.values() for n in numbers}
    assert used <= ACTION_UNITS.keys()
    for number, au in ACTION_UNITS.items():
        assert au.number == number and au.code == f"AU{number}"
        assert au.name and au.name == au.name.lower(), au
        assert au.regions, au
        for region in au.regions:
            assert region.anchors and all(0 <= i < NUM_LANDMARKS for i in region.anchors), au
            assert all(0 < s < 1.5 for s in region.semi_axes), f"{au.code}: semi-axes are in IOD units"
        if len(au.regions) == 2:  # bilateral: the subject's right side, then its mirror image
            right, left = au.regions
            assert (right.mirrored, left.mirrored) == (False, True), au
            assert right.semi_axes == left.semi_axes and right.offset == left.offset, au
            assert right.angle_deg == left.angle_deg, au
    # METHOD.md: disgust's AU10 is the upper lip raiser, drawn on the upper lip (not the "upper lid").
    assert ACTION_UNITS[10].name == "upper lip raiser"


def test_blendshape_names_are_mediapipes(smile):
    names = set(smile.faces[0].blendshapes)
    for au in ACTION_UNITS.values():
        assert set(au.blendshapes) <= names, f"{au.code}: unknown blendshape in {au.blendshapes}"
    assert "mouthSmileLeft" in blendshapes_for("happiness")
    assert blendshapes_for("neutral") == ()


# --- AU maps on a real face -----------------------------------------------------------------------------

def face_crop(points: np.ndarray, margin: float = 0.15) -> tuple[np.ndarray, float]:
    """Landmarks moved into a square crop around the face (like a training image) and the crop's side."""
    xy = points[:, :2].astype(np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    side = float((hi - lo).max() * (1 + 2 * margin))
    return xy - ((lo + hi) / 2 - side / 2), side


def value_at(amap: np.ndarray, crop_points: np.ndarray, side: float, index: int) -> float:
    h, w = amap.shape
    x, y = crop_points[index] * (w / side, h / side)
    return float(amap[int(y), int(x)])


# Where each expression's map must be hot (>= the level given) and cold (<= COLD) on a real face, by
# MediaPipe landmark. Forehead 10, brows 105/334 (mid) 107/336 (inner) 70/300 (outer), glabella 9,
# upper lids 159/386, lower lids 145/374, cheeks 117/346, nose 195/4, upper lip 0, lips 13/14,
# mouth corners 61/291, chin 199.
HOT = {
    "happiness": {"cheeks": ((118, 347), 0.7), "mouth corners": ((61, 291), 0.35)},
    "surprise": {"brows": ((105, 334), 0.2), "upper lids": ((159, 386), 0.2),
                 "open mouth": ((13, 14), 0.6), "jaw": ((199,), 0.6)},
    "sadness": {"inner brows": ((107, 336), 0.7), "glabella": ((9,), 0.7), "cheeks": ((118, 347), 0.5),
                "mouth corners": ((61, 291), 0.15), "chin": ((199,), 0.6)},
    "anger": {"glabella": ((9,), 0.5), "eyelids": ((159, 386, 145, 374), 0.35), "upper lip": ((0,), 0.7),
              "lips": ((13, 14), 0.6), "chin": ((199,), 0.6)},
    "disgust": {"nose": ((195, 4), 0.4), "upper lip": ((0,), 0.55), "lips": ((13, 14), 0.45),
                "chin": ((199,), 0.6)},
    "fear": {"inner brows": ((107, 336), 0.5), "glabella": ((9,), 0.5), "brows": ((105, 334), 0.2),
             "upper lids": ((159, 386), 0.2), "open mouth": ((13, 14), 0.6),
             "mouth corners": ((61, 291), 0.12)},
}
COLD_LEVEL = 0.12
COLD = {
    "happiness": {"forehead": (10,), "brows": (105, 334, 107, 336), "glabella": (9,), "nose": (6, 4),
                  "chin": (152,)},
    "surprise": {"forehead": (10,), "cheeks": (117, 346), "nose tip": (4,)},
    "sadness": {"forehead": (10,), "outer brows": (70, 300), "lips": (13, 14), "nose tip": (4,)},
    "anger": {"forehead": (10,), "cheeks": (117, 346), "outer brows": (70, 300)},
    "disgust": {"forehead": (10,), "brows": (105, 334, 107, 336), "eyes": (159, 386, 145, 374),
                "cheeks": (117, 346)},
    "fear": {"forehead": (10,), "cheeks": (117, 346), "nose tip": (4,)},
}
# Share of the map's mass above the eye line: (at least, at most).
UPPER_FACE_SHARE = {
    "happiness": (0.0, 0.1), "disgust": (0.0, 0.1), "anger": (0.1, 0.45),
    "surprise": (0.25, 0.6), "sadness": (0.25, 0.6), "fear": (0.25, 0.6),
}


def one_face_stills(detected_stills):
    stills = [s for s in detected_stills.values() if len(s.faces) == 1]
    assert stills, "no still with exactly one face"
    return stills


@pytest.mark.parametrize("expression", [e for e in CLASS_NAMES if e != "neutral"])
def test_expression_map_peaks_in_the_right_facial_areas(expression, detected_stills):
    for still in one_face_stills(detected_stills):
        pts, side = face_crop(still.points)
        amap = expression_map(pts, (side, side), expression, MAP_SIZE)
        assert amap is not None, still.name
        for area, (indices, level) in HOT[expression].items():
            for i in indices:
                v = value_at(amap, pts, side, i)
                assert v >= level, f"{expression} on {still.name}: {area} (landmark {i}) is {v:.2f} < {level}"
        for area, indices in COLD[expression].items():
            for i in indices:
                v = value_at(amap, pts, side, i)
                assert v <= COLD_LEVEL, f"{expression} on {still.name}: {area} (landmark {i}) is {v:.2f}"
        eye_line = pts[[33, 133, 362, 263], 1].mean() * MAP_SIZE / side
        rows = np.arange(MAP_SIZE) + 0.5
        upper = amap[rows < eye_line].sum() / amap.sum()
        lo, hi = UPPER_FACE_SHARE[expression]
        assert lo <= upper <= hi, f"{expression} on {still.name}: {upper:.2f} of the map above the eyes"


def test_happiness_mass_sits_at_mouth_corners_and_cheeks_not_forehead(smile):
    pts, side = face_crop(smile.points)
    amap = expression_map(pts, (side, side), "happiness", MAP_SIZE)
    scale = MAP_SIZE / side
    iod = face_frame(pts).iod * scale
    ys, xs = np.mgrid[0:MAP_SIZE, 0:MAP_SIZE] + 0.5

    def mass_near(i):  # map mass within 0.25 IOD of a landmark
        x, y = pts[i] * scale
        return amap[(xs - x) ** 2 + (ys - y) ** 2 <= (0.25 * iod) ** 2].sum()

    forehead = mass_near(10)
    for i in (61, 291, 117, 346):
        assert mass_near(i) > 10 * max(forehead, 1e-3), f"landmark {i}"


def test_disgust_draws_au10_on_the_upper_lip_not_the_eyes(smile):
    pts, side = face_crop(smile.points)
    amap = expression_map(pts, (side, side), "disgust", MAP_SIZE)
    upper_lip = value_at(amap, pts, side, 0)
    for eye in (159, 386, 145, 374):
        assert value_at(amap, pts, side, eye) < 0.1 * upper_lip


@pytest.mark.parametrize("size", [12, 28, 48, (64, 32)])
@pytest.mark.parametrize("expression", [e for e in CLASS_NAMES if e != "neutral"])
def test_maps_are_float32_in_unit_range_at_any_size(expression, size, smile):
    pts, side = face_crop(smile.points)
    amap = expression_map(pts, (side, side), expression, size)
    w, h = (size, size) if isinstance(size, int) else size
    assert amap.shape == (h, w) and amap.dtype == np.float32
    assert np.isfinite(amap).all()
    assert amap.min() == 0.0 and amap.max() == pytest.approx(1.0) and amap.max() <= 1.0
    # Something below the maximum: a map, not a flat field.
    assert (amap < 0.5).mean() > 0.2


def test_a_blur_too_narrow_to_draw_leaves_the_mask_as_it_is():
    """A face-relative blur width that rounds to 0 (a collapsed face) is no blur, not a NaN map (one FER+
    training face did that)."""
    import warnings

    from stream_fer.face.au_maps import gaussian_blur, map_from_masks

    hard = np.zeros((12, 12), dtype=bool)
    hard[4:7, 3:9] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 in the Gaussian's weights was a RuntimeWarning
        np.testing.assert_array_equal(gaussian_blur(hard.astype(np.float64), 0.004), hard)
        amap = map_from_masks([hard], iod=0.01)
    assert np.isfinite(amap).all() and amap.max() == 1.0


def test_maps_work_in_whole_image_coordinates(smile):
    w, h = smile.size
    amap = expression_map(smile.points, (w, h), "happiness", (w // 4, h // 4))
    assert amap.shape == (h // 4, w // 4)
    x0, y0, x1, y1 = smile.faces[0].box
    peak_y, peak_x = np.unravel_index(amap.argmax(), amap.shape)
    assert x0 <= (peak_x + 0.5) * 4 <= x1 and y0 <= (peak_y + 0.5) * 4 <= y1


def test_maps_turn_with_the_face(smile):
    """Regions are placed in the face's own frame: rotating the landmarks a quarter turn rotates the map."""
    pts, side = face_crop(smile.points)
    turned = np.stack([pts[:, 1], side - pts[:, 0]], axis=1)  # the image turned by np.rot90
    for expression in ("happiness", "fear", "disgust"):
        upright = expression_map(pts, (side, side), expression, MAP_SIZE)
        rotated = expression_map(turned, (side, side), expression, MAP_SIZE)
        diff = np.abs(np.rot90(upright) - rotated)
        assert diff.max() < 0.1 and diff.mean() < 0.005, expression


def test_no_map_for_neutral_missing_landmarks_or_a_face_off_the_map(smile):
    pts, side = face_crop(smile.points)
    assert expression_map(pts, (side, side), "neutral", 48) is None
    assert expression_map(None, (side, side), "happiness", 48) is None
    assert expression_map(np.full((NUM_LANDMARKS, 3), np.nan), (side, side), "happiness", 48) is None
    far_away = pts + (10 * side, 0)
    assert expression_map(far_away, (side, side), "happiness", 48) is None
    assert expression_map(pts - (0, 10 * side), (side, side), "surprise", 48) is None
    with pytest.raises(ValueError):
        expression_map(pts, (side, side), "contempt", 48)


def test_a_face_partly_off_the_map_still_gets_a_normalised_map(smile):
    pts, side = face_crop(smile.points)
    amap = expression_map(pts + (0.45 * side, 0), (side, side), "happiness", 48)  # right half cut off
    assert amap is not None and amap.max() == pytest.approx(1.0)


# --- region masks ---------------------------------------------------------------------------------------

def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """Connected components of a boolean mask, as (N, 2) arrays of (x, y) pixel centres."""
    import cv2

    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [np.argwhere(labels == k)[:, ::-1] + 0.5 for k in range(1, count)]


def test_region_masks_are_per_au_with_bilateral_aus_on_both_sides(smile):
    size = 128
    pts, side = face_crop(smile.points)
    masks = region_masks(pts, (side, side), tuple(ACTION_UNITS.values()), size)
    assert set(masks) == set(ACTION_UNITS)
    scaled = pts * (size / side)
    frame = face_frame(scaled)
    bridge = scaled[6]

    def across(xy):  # signed distance from the face midline, in IOD; negative = subject's right
        return (np.asarray(xy) - bridge) @ frame.x_axis / frame.iod

    for number, mask in masks.items():
        au = ACTION_UNITS[number]
        assert mask.shape == (size, size) and mask.dtype == bool, au.code
        assert 0 < mask.mean() < 0.25, au.code
        parts = blobs(mask)
        if len(au.regions) == 2:
            assert len(parts) == 2, f"{au.code} ({au.name}) should be two separate regions"
            sides = sorted(float(across(p.mean(axis=0))) for p in parts)
            assert sides[0] < -0.15 and sides[1] > 0.15, f"{au.code}: not one region per side {sides}"
            # The subject's right-side region lies on the same side as the right eye (landmark 33).
            right_region = min(parts, key=lambda p: across(p.mean(axis=0)))
            assert across(right_region.mean(axis=0)) * across(scaled[33]) > 0, au.code
            assert abs(sides[0] + sides[1]) < 0.15, f"{au.code}: sides not symmetric {sides}"
        else:
            assert len(parts) == 1, f"{au.code} ({au.name}) should be one region"
            offsets = across(parts[0])
            assert offsets.min() < 0 < offsets.max(), f"{au.code}: a midline region must span the midline"


def test_region_masks_follow_the_output_size(smile):
    pts, side = face_crop(smile.points)
    au = (ACTION_UNITS[12],)
    small = region_masks(pts, (side, side), au, 48)[12]
    large = region_masks(pts, (side, side), au, (96, 96))[12]
    assert small.shape == (48, 48) and large.shape == (96, 96)
    assert large.sum() == pytest.approx(4 * small.sum(), rel=0.25)


# --- alignment ------------------------------------------------------------------------------------------

def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@pytest.mark.parametrize("angle, scale, tx, ty", [(0.0, 1.0, 0.0, 0.0), (0.4, 1.7, 12.0, -5.0),
                                                  (-2.5, 0.05, 300.0, 7.5), (np.pi, 3.0, -1.0, 2.0)])
def test_similarity_transform_recovers_a_known_similarity(angle, scale, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(40, 2))
    expected = similarity(angle, scale, tx, ty)
    dst = alignment.apply_affine(expected, src)
    found = alignment.similarity_transform(src, dst)
    assert found.shape == (2, 3)
    np.testing.assert_allclose(found, expected, atol=1e-9 * max(1.0, abs(tx), abs(ty)))
    np.testing.assert_allclose(alignment.apply_affine(found, src), dst, atol=1e-7)


def test_similarity_transform_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(60, 2))
    expected = similarity(0.3, 0.5, 4.0, 9.0)
    noisy = alignment.apply_affine(expected, src) + rng.normal(0, 0.5, size=src.shape)
    found = alignment.similarity_transform(src, noisy)
    np.testing.assert_allclose(found[:, :2], expected[:, :2], atol=0.01)
    np.testing.assert_allclose(found[:, 2], expected[:, 2], atol=0.5)

    def residual(matrix):
        return ((alignment.apply_affine(matrix, src) - noisy) ** 2).sum()

    assert residual(found) <= residual(expected)  # no similarity fits better, the true one included
    for nudge in (similarity(0.01, 1.0, 0, 0), similarity(0, 1.01, 0, 0), similarity(0, 1, 0.1, -0.1)):
        nudged = np.vstack([nudge, [0, 0, 1]]) @ np.vstack([found, [0, 0, 1]])
        assert residual(found) < residual(nudged[:2])
    mirrored = src * (-1.0, 1.0)  # a reflection is not a similarity: the fit must stay a rotation
    found = alignment.similarity_transform(src, mirrored)
    assert np.linalg.det(found[:, :2]) > 0


def test_similarity_transform_on_real_landmarks(smile):
    src = smile.points[:, :2]
    expected = similarity(-0.2, 0.3, 10.0, 20.0)
    found = alignment.similarity_transform(src, alignment.apply_affine(expected, src))
    np.testing.assert_allclose(found, expected, atol=1e-6)


@pytest.fixture
def template():
    if not alignment.TEMPLATE_PATH.is_file():
        pytest.skip(f"{alignment.TEMPLATE_PATH.name} not generated yet (python -m train template)")
    return alignment.template()


def test_template_is_a_frontal_face_layout_in_48_px(template):
    assert template.shape == (NUM_LANDMARKS, 2)
    assert np.isfinite(template).all()
    assert template.min() >= -4 and template.max() <= alignment.TEMPLATE_SIZE + 4
    # Upright and unmirrored: the subject's right eye on the left, eyes above the mouth.
    assert template[33, 0] < template[263, 0]
    assert template[[33, 263], 1].max() < template[[13, 14], 1].min()


def test_alignment_maps_a_real_face_onto_the_template(template, smile):
    for size in (alignment.TEMPLATE_SIZE, 112):
        matrix = alignment.alignment_matrix(smile.points, size)
        aligned = alignment.apply_affine(matrix, smile.points)
        reference = template * (size / alignment.TEMPLATE_SIZE)
        for i in (33, 263, 1, 152):  # eye corners, nose tip, chin
            assert np.linalg.norm(aligned[i] - reference[i]) < 0.08 * size, f"landmark {i} at size {size}"
        eye_line = aligned[263] - aligned[33]
        assert abs(np.degrees(np.arctan2(eye_line[1], eye_line[0]))) < 8
