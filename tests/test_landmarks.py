"""The MediaPipe landmarker wrapper on real faces: one face per still, 478 points where a face has them,
blendshapes, VIDEO mode, and a quiet stderr."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stream_fer.errors import StreamFerError
from stream_fer.face.geometry import LEFT_EYE_CORNERS, NUM_LANDMARKS, RIGHT_EYE_CORNERS
from stream_fer.landmarks import Landmarker

EYES = list(RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS)
BROWS = [105, 334, 107, 336]
NOSE_TIP, LIPS, CHIN = 1, [13, 14], 152


def test_finds_exactly_one_face_in_every_still(detected_stills):
    for name, still in detected_stills.items():
        assert len(still.faces) == 1, f"{name}: expected one face, found {len(still.faces)}"
        points = still.points
        assert points.shape == (NUM_LANDMARKS, 3) and points.dtype == np.float32, name
        assert np.isfinite(points).all(), name


def test_landmarks_lie_on_the_face_in_anatomical_order(detected_stills):
    for name, still in detected_stills.items():
        pts = still.points[:, :2]
        w, h = still.size
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= w).all(), f"{name}: x outside the image"
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= h).all(), f"{name}: y outside the image"
        x0, y0, x1, y1 = still.faces[0].box
        assert 0.15 * w < x1 - x0 < 0.9 * w and 0.3 * h < y1 - y0 < h, f"{name}: implausible face box"
        y = pts[:, 1]
        # Top to bottom: brows, eyes, nose tip, lips, chin.
        assert y[BROWS].max() < y[EYES].min(), name
        assert y[EYES].max() < y[NOSE_TIP] < y[LIPS].min(), name
        assert y[LIPS].max() < y[CHIN], name
        # Unmirrored frontal video: the subject's right eye is on the image's left.
        assert pts[list(RIGHT_EYE_CORNERS), 0].max() < pts[list(LEFT_EYE_CORNERS), 0].min(), name
        # The eyes sit inside the face box, in its upper half.
        eye_y = y[EYES].mean()
        assert y0 < eye_y < (y0 + y1) / 2, name
        # Inter-ocular distance is a sensible fraction of the face width.
        iod = np.linalg.norm(pts[list(LEFT_EYE_CORNERS)].mean(0) - pts[list(RIGHT_EYE_CORNERS)].mean(0))
        assert 0.25 < iod / (x1 - x0) < 0.65, name


def test_blendshapes_are_the_52_mediapipe_scores(detected_stills):
    for name, still in detected_stills.items():
        shapes = still.faces[0].blendshapes
        assert len(shapes) == 52, name
        assert {"_neutral", "mouthSmileLeft", "mouthSmileRight", "jawOpen", "browInnerUp"} <= shapes.keys()
        assert all(0.0 <= v <= 1.0 for v in shapes.values()), name


def test_blendshapes_measure_the_smile(neutral, smile):
    for side in ("mouthSmileLeft", "mouthSmileRight"):
        assert neutral.faces[0].blendshapes[side] < 0.2
        assert smile.faces[0].blendshapes[side] > 0.5


def test_no_face_in_a_blank_image(landmarker):
    assert landmarker.detect(np.full((360, 640, 3), 128, dtype=np.uint8)) == []


def test_rejects_images_that_are_not_rgb_uint8(landmarker):
    with pytest.raises(ValueError):
        landmarker.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError):
        landmarker.detect(np.zeros((64, 64, 3), dtype=np.float32))


def test_video_mode_tracks_consecutive_frames(shared_dir, landmarker_model, landmarker):
    import av

    path = shared_dir / "videos" / "single_face.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append((frame.to_ndarray(format="rgb24"), round(frame.time * 1000)))
            if len(frames) == 10:
                break
    tracked = []
    with Landmarker(landmarker_model, mode="video") as video:
        for rgb, ts in frames:
            faces = video.detect(rgb, ts)
            assert len(faces) == 1
            tracked.append(faces[0].points[:, :2])
        # A repeated or earlier timestamp (a stuttering source) is nudged forward, not an error.
        assert len(video.detect(frames[-1][0], frames[-1][1])) == 1
        assert len(video.detect(frames[-1][0], 0)) == 1
    tracked = np.stack(tracked)
    iod = np.linalg.norm(tracked[0, 263] - tracked[0, 33])
    step = np.linalg.norm(np.diff(tracked, axis=0), axis=2)  # per point, frame to frame
    assert np.median(step) < 0.1 * iod, "landmarks jump between consecutive frames"
    # VIDEO mode agrees with an independent IMAGE-mode detection of the same frame.
    still = landmarker.detect(frames[0][0])[0].points[:, :2]
    assert np.median(np.linalg.norm(still - tracked[0], axis=1)) < 0.05 * iod


def test_direct_result_reader_gives_what_mediapipes_python_api_gives(landmarker_model, stills):
    """The landmarker reads MediaPipe's C result into numpy (fast path); its public API must agree."""
    from stream_fer.images import read_rgb

    rgb = read_rgb(stills[0])
    h, w = rgb.shape[:2]
    with Landmarker(landmarker_model, mode="image") as fast, Landmarker(landmarker_model, mode="image") as slow:
        assert fast._reader.available(), "the pinned mediapipe's C result is no longer readable"
        faces = fast.detect(rgb)
        image = slow._mp.Image(image_format=slow._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        public = slow._detect_public(image, None)
    assert len(faces) == len(public) == 1
    (points, shapes), face = public[0], faces[0]
    np.testing.assert_allclose(face.points, points * np.float32((w, h, w)), rtol=1e-6, atol=1e-4)
    assert list(face.blendshapes) == list(shapes) and len(shapes) == 52
    assert all(abs(face.blendshapes[k] - shapes[k]) < 1e-6 for k in shapes)


def test_a_wrong_model_file_is_refused_before_mediapipe_sees_it(tmp_path):
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"not a model")
    with pytest.raises(StreamFerError, match="sha256"):
        Landmarker(bogus)


def test_unknown_mode_is_refused(landmarker_model):
    with pytest.raises(ValueError, match="mode"):
        Landmarker(landmarker_model, mode="live")


NOISE = (b"WARNING: Logging before InitGoogle() is written to STDERR\n"
         b"W0000 00:00:1795457605.912980    3184 face_landmarker_graph.cc:181] Sets FaceBlendshapesGraph\n"
         b"I0000 00:00:1795457605.912980    3184 gl_context.cc:369] GL version: 3.2\n"
         b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")


def test_stderr_filter_drops_mediapipe_chatter_and_keeps_everything_else(capfd):
    import os
    import threading

    from stream_fer.landmarks import _native_stderr

    with _native_stderr.active():
        os.write(2, NOISE)
        os.write(2, b"E0000 00:00:1795457605.9 3184 graph.cc:1] a real native error\n")
        other = threading.Thread(target=os.write, args=(2, b"another thread's line\n"))
        other.start()
        other.join()
        with _native_stderr.active():  # nested and concurrent users share one filter
            os.write(2, NOISE)
        os.write(2, b"no newline at the end")
    os.write(2, b"|after\n")
    assert capfd.readouterr().err == ("E0000 00:00:1795457605.9 3184 graph.cc:1] a real native error\n"
                                      "another thread's line\n"
                                      "no newline at the end|after\n")


def test_chatter_written_into_another_threads_unfinished_line_is_left_out(capfd):
    """Under load MediaPipe's thread can write a chatter line between the text of the CLI's error line and its
    newline: the text is kept, the chatter dropped (seen once as 'stream-fer: error: ...W0000 ...')."""
    import os

    from stream_fer.landmarks import _native_stderr

    with _native_stderr.active():
        os.write(2, b"stream-fer: error: not a video file")
        os.write(2, NOISE.splitlines(keepends=True)[1])
        os.write(2, b"\n")
        os.write(2, b"tail W0000 00:00:1.0 3184 face_landmarker_graph.cc:181] more chatter")  # the last words
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert lines == ["stream-fer: error: not a video file", "tail "]


def test_a_landmarker_starts_silently_and_is_freed_without_close(landmarker_model, detected_stills):
    """In a fresh interpreter: no MediaPipe chatter on stderr, and a landmarker dropped without close()
    is finalised (so nothing fails at interpreter exit)."""
    still = next(iter(detected_stills.values()))
    script = f"""
import gc, weakref
from stream_fer.images import read_rgb
from stream_fer.landmarks import Landmarker
rgb = read_rgb({str(still.path)!r})
lm = Landmarker({str(landmarker_model)!r}, mode="video")
assert len(lm.detect(rgb, 0)) == 1
ref = weakref.ref(lm)
del lm
gc.collect()
assert ref() is None, "the first landmarker is never freed"
leftover = Landmarker({str(landmarker_model)!r})  # left open at exit on purpose
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def test_last_words_reach_stderr_while_a_landmarker_is_still_starting(tmp_path):
    """analyze() builds MediaPipe in a thread while fd 2 runs through the start-up noise filter; a run that fails
    meanwhile prints its error line into that pipe. settle_native_stderr() (what the CLI calls after its last
    line) waits until the line has reached the real stderr, even when the process then ends at once."""
    import subprocess
    import sys

    code = (
        "import os, sys, threading, time\n"
        "from stream_fer.landmarks import _native_stderr, settle_native_stderr\n"
        "started = threading.Event()\n"
        "def starting():\n"
        "    with _native_stderr.active():\n"
        "        started.set(); time.sleep(0.5)\n"
        "threading.Thread(target=starting, daemon=True).start()\n"
        "started.wait()\n"
        "print('stream-fer: error: the last words', file=sys.stderr)\n"
        "settle_native_stderr()\n"
        "os._exit(2)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["stream-fer: error: the last words"]
