"""Track ids: optimal assignment, ids that stay with their face, tracks that survive a few misses and end
after that, and ids for two real faces across frames."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stream_fer.tracking import FaceTracker, box_distance, linear_sum_assignment


def _brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return _brute_force(cost.T)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (2, 5), (5, 2), (4, 4), (0, 3), (3, 0)])
def test_assignment_is_optimal(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == len(cols) == min(shape)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        if min(shape):
            assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost))


def _box(cx, cy, size=100.0):
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)


def test_distance_is_relative_to_face_size():
    assert box_distance(_box(0, 0), _box(0, 0)) == 0
    assert box_distance(_box(0, 0, 100), _box(50, 0, 100)) == pytest.approx(
        box_distance(_box(0, 0, 400), _box(200, 0, 400)))


def test_ids_follow_moving_faces_even_when_detections_come_in_another_order():
    tracker = FaceTracker(max_missed=2)
    first = tracker.update([_box(100, 100), _box(400, 100)])
    assert first.track_ids == (1, 2) and first.ended == ()
    for step in range(1, 6):  # both drift right by 10 px per frame; detector order flips every frame
        boxes = [_box(100 + 10 * step, 100), _box(400 + 10 * step, 100)]
        ids = tracker.update(boxes[::-1] if step % 2 else boxes).track_ids
        assert ids == ((2, 1) if step % 2 else (1, 2))


def test_a_track_survives_max_missed_frames_then_ends():
    tracker = FaceTracker(max_missed=3)
    assert tracker.update([_box(100, 100)]).track_ids == (1,)
    for _ in range(3):  # missed 3 times: still alive
        update = tracker.update([])
        assert update.ended == () and tracker.active_ids == (1,)
    assert tracker.update([_box(105, 100)]).track_ids == (1,)  # comes back with its id
    for _ in range(3):
        tracker.update([])
    update = tracker.update([])  # the 4th miss in a row ends it
    assert update.ended == (1,) and tracker.active_ids == ()
    assert tracker.update([_box(105, 100)]).track_ids == (2,)  # ids are never reused


def test_a_face_far_away_starts_a_new_track():
    tracker = FaceTracker(max_missed=5, max_distance=0.6)
    tracker.update([_box(100, 100)])
    update = tracker.update([_box(500, 100)])
    assert update.track_ids == (2,)
    assert set(tracker.active_ids) == {1, 2}


def test_reset_forgets_every_track():
    tracker = FaceTracker()
    tracker.update([_box(100, 100), _box(300, 100)])
    assert tracker.reset() == (1, 2)
    assert tracker.active_ids == ()
    assert tracker.update([_box(100, 100)]).track_ids == (1,)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        FaceTracker(max_missed=-1)
    with pytest.raises(ValueError):
        FaceTracker(max_distance=0)


def test_two_real_faces_keep_their_ids(two_faces, landmarker):
    """Two stills side by side, detected by MediaPipe, shifted a little each frame and with the faces'
    detection order reversed half of the time: each person keeps one id."""
    tracker = FaceTracker(max_missed=2)
    by_side: dict[str, set[int]] = {"left": set(), "right": set()}
    for shift in range(0, 25, 6):
        frame = np.roll(two_faces, shift, axis=1)
        faces = landmarker.detect(frame)
        assert len(faces) == 2
        boxes = [f.box for f in faces]
        if shift % 12:
            boxes = boxes[::-1]
        ids = tracker.update(boxes).track_ids
        for box, tid in zip(boxes, ids):
            side = "left" if (box[0] + box[2]) / 2 < frame.shape[1] / 2 else "right"
            by_side[side].add(tid)
    assert len(by_side["left"]) == 1 and len(by_side["right"]) == 1
    assert by_side["left"] != by_side["right"]
