"""The served app, driven over HTTP as a browser or a script would: gradio_client on the image and file
endpoints (outputs checked for substance), the upload limit, refusal of paths the page names, rtsp://
only, and one visitor's long job not blocking another visitor."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream_fer.face.classes import CLASS_NAMES
from stream_fer.samples import SAMPLE_FRAMES  # the file tests upload the shipped sample clip

# Gradio's own queue code trips pandas deprecation warnings in the server's threads; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

OVERLAYS = ["attention", "au_regions", "bars", "box", "label"]
CONTROLS = ("auto", 1, "ema", 0.6, OVERLAYS)  # backend, max faces, smoothing, strength, overlays


def test_the_app_listens_on_loopback_only(app_server):
    import httpx

    assert app_server.url.startswith("http://127.0.0.1:")
    page = httpx.get(app_server.url, timeout=30)
    assert page.status_code == 200 and "stream-fer" in page.text


def test_image_endpoint_returns_an_annotated_photo_and_its_explanation(app_client, smile):
    from gradio_client import handle_file

    from stream_fer.images import read_rgb

    annotated_path, probs, explanation_path, summary, _shapes, _share = app_client.predict(
        handle_file(str(smile.path)), *CONTROLS, 1, api_name="/image")
    annotated = read_rgb(annotated_path)
    assert annotated.shape == smile.rgb.shape
    # The overlays are on the face: inside the landmark box most pixels changed; left of the face (the
    # probability panel goes to its right, where there is room) nothing did.
    x0, y0 = np.floor(smile.points[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(smile.points[:, :2].max(axis=0)).astype(int)
    changed = np.abs(annotated.astype(np.int16) - smile.rgb.astype(np.int16)).max(axis=2) > 8
    assert changed[y0:y1, x0:x1].mean() > 0.1, "the face is not annotated"
    assert changed[:, : x0 - (x1 - x0) // 4].mean() < 0.01, "pixels far from the face changed"

    labels = {c["label"]: c["confidence"] for c in probs["confidences"]}
    assert set(labels) == set(CLASS_NAMES) and probs["label"] in CLASS_NAMES
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-3)
    panel = read_rgb(explanation_path)
    assert panel.shape[0] >= 256 and panel.shape[1] > 3 * panel.shape[0], panel.shape
    assert panel.std() > 20, "the explanation panel is blank"
    assert "Face 1 of 1" in summary and probs["label"] in summary and "cosine" in summary


def test_file_endpoint_writes_the_annotated_video_a_csv_row_per_frame_and_a_timeline(app_client,
                                                                                     single_face_video):
    import pandas as pd
    from gradio_client import handle_file

    from stream_fer.sinks import video_info_of

    video, csv_path, timeline, summary = app_client.predict(handle_file(str(single_face_video)), *CONTROLS,
                                                            api_name="/video")
    video_path = video["video"] if isinstance(video, dict) else video
    rows = pd.read_csv(csv_path)
    assert len(rows) == SAMPLE_FRAMES and rows["frame_index"].tolist() == list(range(SAMPLE_FRAMES)), \
        "one row per frame, in order"
    assert rows["track_id"].notna().all() and rows["track_id"].nunique() == 1
    p = rows[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1.0, atol=2e-3)
    info = video_info_of(video_path)
    assert info["frames"] == SAMPLE_FRAMES, "the annotated video keeps every frame"
    assert abs(info["times"][-1] - rows["timestamp"].iloc[-1]) < 1e-3, "and the timing"

    data = pd.DataFrame(timeline["data"], columns=timeline["columns"])
    assert set(data["series"]) == set(CLASS_NAMES)
    assert (data.groupby("series").size() == SAMPLE_FRAMES).all()
    assert f"{SAMPLE_FRAMES} frames" in summary


def test_uploads_over_the_limit_are_refused(app_server):
    import httpx
    from app_helpers import APP_TEST_UPLOAD_MB

    big = b"\0" * ((APP_TEST_UPLOAD_MB + 1) * 1024 * 1024)
    r = httpx.post(app_server.url + "gradio_api/upload", files={"files": ("big.mp4", big, "video/mp4")}, timeout=30)
    assert r.status_code == 413, r.text


def test_a_path_named_by_the_page_is_never_read(app_server, single_face_video):
    """A request that names a server-side file instead of uploading one fails before any handler runs."""
    import httpx

    payload = {"data": [{"path": str(single_face_video), "meta": {"_type": "gradio.FileData"}}, *CONTROLS]}
    r = httpx.post(app_server.url + "gradio_api/call/video", json=payload, timeout=30)
    assert r.status_code == 200
    event = r.json()["event_id"]
    stream = httpx.get(app_server.url + f"gradio_api/call/video/{event}", timeout=60).text
    assert "event: error" in stream and "event: complete" not in stream, stream[:500]
    assert "frames" not in stream, "no handler output may come back"


def test_the_file_route_serves_no_file_the_app_did_not_make(app_server, single_face_video):
    import httpx

    repo_file = Path(__file__).resolve().parents[2] / "pyproject.toml"
    for path in ("/etc/passwd", str(repo_file), "pyproject.toml", str(single_face_video)):
        r = httpx.get(app_server.url + "gradio_api/file=" + path, timeout=30)
        assert r.status_code in (403, 404), (path, r.status_code)


def test_rtsp_start_accepts_only_rtsp_urls(app_client):
    from gradio_client.exceptions import AppError

    for url in ("file:///etc/passwd", "/work/shared/videos/single_face.mp4", "http://127.0.0.1/"):
        with pytest.raises(AppError, match="rtsp://"):
            app_client.predict(url, *CONTROLS, api_name="/rtsp_start")


def test_events_run_concurrently_across_visitors(app_server):
    """Each kind of event has its own concurrency group and limit (gradio's default is one at a time,
    app-wide, which would make every visitor wait for every other)."""
    fns = {fn.api_name: fn for fn in app_server.demo.fns.values() if fn.api_name}
    for name in ("image", "video", "rtsp_start"):
        assert fns[name].concurrency_limit is None or fns[name].concurrency_limit > 1, name
    assert len({fns[n].concurrency_id for n in ("image", "video", "rtsp_start")}) == 3


def test_a_long_file_job_does_not_block_another_visitor(app_factory, gradio_temp, smile, single_face_video):
    """Visitor A's video job is held inside its handler; visitor B's photo is still answered."""
    from app_helpers import APP_TEST_UPLOAD_MB, free_port
    from gradio_client import Client, handle_file

    from stream_fer.app.app import build_app, launch
    from stream_fer.app.sessions import AnalyzerFactory
    from stream_fer.app.settings import AppConfig

    entered, release = threading.Event(), threading.Event()

    class HeldVideoFactory(AnalyzerFactory):
        def create(self, settings, mode="video"):
            if mode == "video":
                entered.set()
                release.wait(60)
            return super().create(settings, mode)

    factory = HeldVideoFactory(app_factory.engines, app_factory.landmarker_path)
    demo = build_app(AppConfig(max_upload_mb=APP_TEST_UPLOAD_MB), factory)
    _, url = launch(demo, "127.0.0.1", free_port(), APP_TEST_UPLOAD_MB, block=False, quiet=True)
    try:
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        job = a.submit(handle_file(str(single_face_video)), *CONTROLS, api_name="/video")
        assert entered.wait(60), "the video job never started"
        t0 = time.monotonic()
        result = b.predict(handle_file(str(smile.path)), *CONTROLS, 1, api_name="/image")
        assert "Face 1 of 1" in result[3]
        assert not job.done(), "the video job was held the whole time"
        assert time.monotonic() - t0 < 60
        release.set()
        _video, _csv_path, _, summary = job.result(timeout=120)
        assert f"{SAMPLE_FRAMES} frames" in summary
    finally:
        release.set()
        demo.close()
