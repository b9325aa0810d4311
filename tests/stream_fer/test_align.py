"""Aligned crops: luminance grayscale, the face where the training template says, the same crop at any
frame resolution, and the way back from crop space to the frame."""

from __future__ import annotations

import cv2
import numpy as np

from stream_fer.align import align_faces, crop_map_to_frame, frame_roi, invert_affine, to_gray, warp_crop
from stream_fer.face.alignment import alignment_matrix, apply_affine, template

RIGHT_EYE, LEFT_EYE, MOUTH = [33, 133], [263, 362], [13, 14, 61, 291]


def test_grayscale_is_bt601_luminance():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]]], dtype=np.uint8)
    expected = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(int)
    assert np.abs(to_gray(rgb).astype(int) - expected).max() <= 1


def test_crop_of_a_real_face_puts_eyes_and_mouth_where_the_template_has_them(smile, landmarker):
    crops, matrices = align_faces(smile.rgb, [smile.points], size=48)
    assert crops.shape == (1, 48, 48) and crops.dtype == np.uint8 and matrices.shape == (1, 2, 3)
    assert 40 < crops.mean() < 215 and crops.std() > 20  # a face, not a flat or clipped patch
    # Find the face again in the crop, upscaled as for FER+ images, and compare with the template.
    big = cv2.resize(crops[0], (192, 192), interpolation=cv2.INTER_CUBIC)
    found = landmarker.detect(np.repeat(big[..., None], 3, axis=2))
    assert len(found) == 1, "no face found in the aligned crop"
    pts = found[0].points[:, :2] / 4.0
    tpl = template()
    for name, idx in (("right eye", RIGHT_EYE), ("left eye", LEFT_EYE), ("mouth", MOUTH)):
        err = np.linalg.norm(pts[idx].mean(0) - tpl[idx].mean(0))
        assert err < 2.5, f"{name} is {err:.1f} px (of 48) from the template"


def test_crop_does_not_depend_on_the_frame_resolution(smile):
    """The same face from the 640x360 frame and from a 1920x1080 upscale gives nearly the same crop
    (large faces are area-filtered before the warp, so they do not alias)."""
    small = align_faces(smile.rgb, [smile.points])[0][0].astype(float)
    big_rgb = cv2.resize(smile.rgb, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    big = align_faces(big_rgb, [smile.points * np.array([3.0, 3.0, 3.0], np.float32)])[0][0].astype(float)
    assert np.abs(small - big).mean() < 4.0


def test_face_off_the_frame_gives_a_blank_crop_without_error():
    rgb = np.full((100, 100, 3), 128, np.uint8)
    m = np.array([[0.5, 0, 500.0], [0, 0.5, 500.0]])  # maps the frame far outside the crop
    assert warp_crop(rgb, m, 48).shape == (48, 48, 3)
    assert frame_roi(m, 48, rgb.shape) is None
    assert crop_map_to_frame(np.ones((12, 12)), m, 48, rgb.shape) is None


def test_crop_map_goes_back_to_the_right_place_in_the_frame(smile):
    m = alignment_matrix(smile.points, 48)
    # One hot cell of a 12 x 12 map, over the mouth centre in crop space.
    mouth_crop = apply_affine(m, smile.points[[13, 14]]).mean(0)
    cell = np.floor(mouth_crop / 4).astype(int)
    att = np.zeros((12, 12), np.float32)
    att[cell[1], cell[0]] = 1.0
    roi = frame_roi(m, 48, smile.rgb.shape)
    patch = crop_map_to_frame(att, m, 48, smile.rgb.shape, roi, smooth=False)
    assert patch.shape == (roi[3] - roi[1], roi[2] - roi[0])
    peak_y, peak_x = np.unravel_index(np.argmax(patch), patch.shape)
    centre_crop = (cell + 0.5) * 4 - 0.5
    expected = apply_affine(invert_affine(m), centre_crop[None])[0] - roi[:2]
    assert np.linalg.norm(np.array([peak_x, peak_y]) - expected) < 1.5  # frame pixels
    # And it lands on the face's mouth in the frame.
    mouth_frame = smile.points[[13, 14], :2].mean(0) - roi[:2]
    cell_px = 4 / np.sqrt(abs(np.linalg.det(m[:, :2])))  # one map cell, in frame pixels
    assert np.linalg.norm(np.array([peak_x, peak_y]) - mouth_frame) < cell_px
