"""The app's handlers as plain functions on real frames: the webcam streaming handler, per-session
isolation, the RTSP session (against a real local RTSP server that drops and comes back), and the input
checks (rtsp:// only, uploads only)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream_fer.face.action_units import EXPRESSION_AUS, blendshapes_for

OVERLAYS = ["attention", "au_regions", "bars", "box", "label"]
CONTROLS = ("auto", 1, "ema", 0.6, OVERLAYS)  # backend, max faces, smoothing, strength, overlays


def read_frames(path: Path, indices) -> dict[int, np.ndarray]:
    from stream_fer.sources import FileSource

    wanted, out = set(indices), {}
    with FileSource(path) as source:
        for frame in source:
            if frame.index in wanted:
                out[frame.index] = frame.rgb
            if len(out) == len(wanted):
                break
    return out


def box_mask(shape, box, margin: int = 0) -> np.ndarray:
    x0, y0, x1, y1 = (round(v) for v in box)
    mask = np.zeros(shape[:2], dtype=bool)
    mask[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = True
    return mask


@pytest.fixture(scope="module")
def clip_frames(single_face_video) -> dict[int, np.ndarray]:
    """Every 6th frame of single_face.mp4 (neutral at 0, the broad smile around 36)."""
    return read_frames(single_face_video, range(0, 72, 6))


def test_webcam_handler_streams_annotated_frames_and_panels(app_handlers, clip_frames):
    tracks, indices = set(), []
    happiness = {}
    for index in sorted(clip_frames):
        rgb = clip_frames[index]
        out = app_handlers.webcam(rgb, "visitor-stream", *CONTROLS, 1)
        annotated, probs, explanation, summary, shapes, share = out
        session = app_handlers.visitors.peek("visitor-stream", "webcam")
        result = session.last.result
        indices.append(result.frame_index)
        assert len(result.faces) == 1, f"frame {index}: expected one face"
        face = result.faces[0]
        tracks.add(face.track_id)

        # The annotated frame is the input with the overlays drawn where the face is.
        assert annotated.shape == rgb.shape and annotated.dtype == np.uint8
        changed = np.abs(annotated.astype(np.int16) - rgb.astype(np.int16)).max(axis=2) > 8
        inside = box_mask(rgb.shape, face.box)
        assert changed[inside].mean() > 0.1, f"frame {index}: the face region is barely changed"
        # (the probability panel goes beside the face, on the right where there is room: the man sits left
        # of centre, so the frame left of his face stays as it was)
        x0, w = int(face.box[0]), int(face.box[2] - face.box[0])
        assert changed[:, : max(1, x0 - w // 4)].mean() < 0.01, f"frame {index}: pixels far from the face changed"

        # The panels describe the selected face.
        assert set(probs) == set(session.last.class_names)
        assert abs(sum(probs.values()) - 1.0) < 1e-3
        assert max(probs, key=probs.get) == face.label
        assert explanation.ndim == 3 and explanation.shape[1] > 3 * explanation.shape[0]
        assert "Face 1 of 1" in summary and face.label in summary
        if face.att_au_cosine is None:
            assert "n/a" in summary
        else:
            assert f"{face.att_au_cosine:.2f}" in summary
        if EXPRESSION_AUS[face.label]:
            assert list(shapes) == list(blendshapes_for(face.label)), "the predicted expression's AUs"
        else:  # neutral has no AUs: the likeliest expression that has them is shown, and named
            focus = max((c for c in probs if EXPRESSION_AUS[c]), key=probs.get)
            assert list(shapes) == list(blendshapes_for(focus)) and f"shown for **{focus}**" in summary
        assert all(shapes[name] == pytest.approx(face.blendshapes[name]) for name in shapes)
        assert all(0.0 <= v <= 1.0 for v in (share or {}).values())
        happiness[index] = probs["happiness"]

    assert indices == list(range(len(clip_frames))), "frames of one stream are numbered in arrival order"
    assert len(tracks) == 1, f"one face, one track; got {tracks}"
    assert happiness[36] > happiness[0], f"the broad smile should look happier than the neutral start: {happiness}"
    app_handlers.leave("visitor-stream")


def test_webcam_handler_with_no_face_returns_the_frame_unchanged(app_handlers, shared_dir):
    path = shared_dir / "videos" / "no_face.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rgb = read_frames(path, [0])[0]
    annotated, probs, explanation, summary, shapes, share = app_handlers.webcam(rgb, "visitor-no-face", *CONTROLS, 1)
    app_handlers.leave("visitor-no-face")
    assert np.array_equal(annotated, rgb)
    assert probs is None and explanation is None and shapes is None and share is None
    assert summary == "No face found."


def test_each_session_has_its_own_analyzer_and_a_busy_one_blocks_no_other(app_handlers, clip_frames):
    rgb = clip_frames[0]
    app_handlers.webcam(rgb, "visitor-a", *CONTROLS, 1)
    app_handlers.webcam(rgb, "visitor-b", *CONTROLS, 1)
    a, b = (app_handlers.visitors.peek(v, "webcam") for v in ("visitor-a", "visitor-b"))
    assert a is not b
    analyzer_a, analyzer_b = a.slot.analyzer(a.slot._settings), b.slot.analyzer(b.slot._settings)
    assert analyzer_a is not analyzer_b, "two visitors must never share tracker and smoother state"

    # While session A is busy with a frame, A's next frame is dropped and B goes on, in another thread.
    got = {}
    with a.slot.lock:
        dropped = app_handlers.webcam(rgb, "visitor-a", *CONTROLS, 1)
        worker = threading.Thread(target=lambda: got.setdefault(
            "b", app_handlers.webcam(rgb, "visitor-b", *CONTROLS, 1)))
        worker.start()
        worker.join(timeout=30)
    assert all(v is None for v in dropped), "a frame that arrives while busy is skipped"
    assert a.dropped == 1
    assert "b" in got and got["b"][0] is not None and b.last.result.frame_index == 1

    # Changing a control rebuilds that session's analyzer, and only when something changed; overlays
    # only change the drawing, so they keep the analyzer (and its tracks).
    app_handlers.webcam(rgb, "visitor-b", *CONTROLS, 1)
    assert b.slot._analyzer is analyzer_b
    plain = app_handlers.webcam(rgb, "visitor-b", "auto", 1, "ema", 0.6, ["box"], 1)
    assert b.slot._analyzer is analyzer_b and not analyzer_b.overlays.attention and analyzer_b.overlays.box
    assert np.abs(plain[0].astype(int) - rgb.astype(int)).max(axis=2).astype(bool).mean() < 0.05, \
        "with only the box drawn, little of the frame changes"
    app_handlers.webcam(rgb, "visitor-b", "auto", 2, "ema", 0.6, OVERLAYS, 1)
    assert b.slot._analyzer is not analyzer_b and b.slot._analyzer.max_faces == 2
    for visitor in ("visitor-a", "visitor-b"):
        app_handlers.leave(visitor)


def test_image_handler_explains_the_face(app_handlers, smile):
    annotated, probs, explanation, summary, _shapes, _share = app_handlers.image(smile.rgb, *CONTROLS, 1)
    assert annotated.shape == smile.rgb.shape and not np.array_equal(annotated, smile.rgb)
    assert explanation.shape[0] >= 256, "the Image tab's explanation panel is the large one"
    assert "Face 1 of 1" in summary
    # A second photo on the shared photo analyzers starts afresh (no smoothing carried over from the first).
    created = app_handlers.images.created
    again = app_handlers.image(smile.rgb, *CONTROLS, 1)
    assert app_handlers.images.created == created, "photos reuse the shared image-mode analyzers"
    assert again[1] == pytest.approx(probs, abs=1e-5)
    assert np.array_equal(again[0], annotated)


# ------------------------------------------------------------------------------------------------ checks


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:8554/stream", "rtsps://cam.example:322/live?x=1",
                                 "  rtsp://user:pw@10.0.0.2/ch1  "])
def test_rtsp_urls_are_accepted(url):
    from stream_fer.app.settings import check_rtsp_url

    assert check_rtsp_url(url) == url.strip()


@pytest.mark.parametrize("url", ["", None, "file:///etc/passwd", "/etc/passwd", "http://example.com/a.mp4",
                                 "rtsp://", "rtsp://host/a b", "rtmp://host/live", "0"])
def test_other_stream_urls_are_refused(url):
    from stream_fer.app.settings import check_rtsp_url
    from stream_fer.errors import StreamFerError

    with pytest.raises(StreamFerError):
        check_rtsp_url(url)


def test_only_files_in_gradios_upload_folder_are_read(tmp_path, monkeypatch):
    from stream_fer.app.settings import check_uploaded
    from stream_fer.errors import StreamFerError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    inside = tmp_path / "uploads" / "abc123" / "clip.mp4"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"\0")
    assert check_uploaded(str(inside)) == inside.resolve()
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"\0")
    for path in (outside, Path("/etc/hostname"), tmp_path / "uploads" / ".." / "elsewhere.mp4", None, ""):
        with pytest.raises(StreamFerError):
            check_uploaded(path, "video")


# -------------------------------------------------------------------------------------------------- RTSP


def _rtsp_server_class():
    """The project's test RTSP server (tests/stream_fer/rtsp_server.py)."""
    path = Path(__file__).resolve().parents[1] / "stream_fer" / "rtsp_server.py"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    name = "stream_fer_tests_rtsp_server"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.RtspServer


def _poll_until(handlers, session, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        out = handlers.rtsp_poll(session, 1)
        seen.append(out[-2])
        if predicate(out):
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; statuses seen: {list(dict.fromkeys(seen))[-5:]}")


def test_rtsp_session_streams_shows_a_drop_and_reconnects(app_handlers, single_face_video):
    RtspServer = _rtsp_server_class()
    with RtspServer.from_video(single_face_video, fps=30) as server:
        session = "visitor-rtsp"
        status = app_handlers.rtsp_start(server.url, session, *CONTROLS)
        try:
            out = _poll_until(app_handlers, session, lambda o: isinstance(o[0], np.ndarray), 30, "a first frame")
            annotated, probs, explanation, summary = out[0], out[1], out[2], out[3]
            assert annotated.shape == (360, 640, 3)
            assert probs and "Face 1 of 1" in summary and explanation is not None
            assert "Live" in out[-2] and out[-1] is True

            # Nothing new since the last poll: the images are left as they are (skip), the status updates.
            app_handlers.rtsp_poll(session, 1)

            server.stop()  # the camera goes away
            _poll_until(app_handlers, session, lambda o: "reconnecting" in o[-2], 30, "the drop to be shown")
            server.restart()
            out = _poll_until(app_handlers, session,
                              lambda o: "reconnected 1" in o[-2] and isinstance(o[0], np.ndarray), 40,
                              "frames after reconnecting")
            assert out[-1] is True
        finally:
            stream = app_handlers.visitors.peek(session, "rtsp")
            status = app_handlers.rtsp_stop(session)
        assert status.startswith("Stopped") and not stream.running
        assert app_handlers.visitors.peek(session, "rtsp") is None, "a stopped stream is released"
        assert app_handlers.rtsp_poll(session, 1)[-1] is False, "a stopped stream stops the page's timer"


def test_rtsp_session_that_cannot_connect_says_so(app_handlers):
    from app_helpers import free_port

    url = f"rtsp://127.0.0.1:{free_port()}/nothing-here"
    session = "visitor-rtsp-nothing"
    app_handlers.rtsp_start(url, session, *CONTROLS)
    out = _poll_until(app_handlers, session, lambda o: o[-1] is False, 30, "the connection attempts to end")
    assert "cannot open RTSP stream" in out[-2], out[-2]
    app_handlers.rtsp_stop(session)
