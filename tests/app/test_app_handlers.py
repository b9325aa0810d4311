"""The app's handlers as plain functions on real frames: the photo handler, the RTSP session (against a
real local RTSP server that drops and comes back), and the input checks (rtsp:// only, uploads only)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

OVERLAYS = ["attention", "au_regions", "bars", "box", "label"]
CONTROLS = ("auto", 1, "ema", 0.6, OVERLAYS)  # backend, max faces, smoothing, strength, overlays


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




def _poll_until(handlers, visitor, predicate, timeout: float, what: str):
    """(newest analysed frame or None, status line, running) once predicate(...) holds, polled as the
    page's status timer and watch socket do."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        status, running = handlers.rtsp_status(visitor)
        session = handlers.visitors.peek(visitor, "rtsp")
        out = (session.take_new() if session is not None else None, status, running)
        seen.append(status)
        if predicate(out):
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; statuses seen: {list(dict.fromkeys(seen))[-5:]}")


def test_rtsp_session_streams_shows_a_drop_and_reconnects(app_handlers, single_face_video):
    from app_helpers import rtsp_server_class

    RtspServer = rtsp_server_class()
    with RtspServer.from_video(single_face_video, fps=30) as server:
        session = "visitor-rtsp"
        status = app_handlers.rtsp_start(server.url, session, *CONTROLS)
        try:
            analysed, status, running = _poll_until(app_handlers, session, lambda o: o[0] is not None, 30,
                                                    "a first frame")
            assert analysed.rgb.shape == (360, 640, 3) and len(analysed.result.faces) == 1
            assert "Live" in status and running is True

            server.stop()  # the camera goes away
            _poll_until(app_handlers, session, lambda o: "reconnecting" in o[1], 30, "the drop to be shown")
            server.restart()
            out = _poll_until(app_handlers, session, lambda o: "reconnected 1" in o[1] and o[0] is not None, 40,
                              "frames after reconnecting")
            assert out[2] is True
        finally:
            stream = app_handlers.visitors.peek(session, "rtsp")
            status = app_handlers.rtsp_stop(session)
        assert status.startswith("Stopped") and not stream.running
        assert app_handlers.visitors.peek(session, "rtsp") is None, "a stopped stream is released"
        # a status poll that was already queued when Stop was clicked keeps the final line and stops the timer
        assert app_handlers.rtsp_status(session) == (status, False), "a stopped stream stops the timer"


def test_rtsp_session_that_cannot_connect_says_so(app_handlers):
    from app_helpers import free_port

    url = f"rtsp://127.0.0.1:{free_port()}/nothing-here"
    session = "visitor-rtsp-nothing"
    app_handlers.rtsp_start(url, session, *CONTROLS)
    out = _poll_until(app_handlers, session, lambda o: o[2] is False, 30, "the connection attempts to end")
    assert "cannot open RTSP stream" in out[1], out[1]
    app_handlers.rtsp_stop(session)
