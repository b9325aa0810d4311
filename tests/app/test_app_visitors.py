"""The app under many visitors: a visitor's live analyzer is released when the visitor leaves or goes
idle (checked through the app's own accounting, with a controlled clock instead of long sleeps), the cap
on live sessions refuses the next visitor with one clear message, and identical requests sent at the same
time all get complete, correct, separate outputs."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

# Gradio's own queue code trips pandas deprecation warnings in the server's threads; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

OVERLAYS = ["attention", "au_regions", "bars", "box", "label"]
CONTROLS = ("auto", 1, "ema", 0.6, OVERLAYS)  # backend, max faces, smoothing, strength, overlays


def _live_settings():
    from stream_fer.app.settings import AnalysisSettings

    return AnalysisSettings()


LIVE = _live_settings()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def handlers_with_clock(app_factory):
    """Handlers of their own (cap 2, idle 60 s) whose registry reads a clock the test moves."""
    from stream_fer.app.handlers import AppHandlers
    from stream_fer.app.settings import AppConfig
    from stream_fer.app.visitors import Visitors

    handlers = AppHandlers(AppConfig(max_sessions=2, session_idle_s=60), app_factory)
    clock = Clock()
    handlers.visitors = Visitors(2, 60, clock=clock)
    yield handlers, clock
    handlers.close()


def _closed(analyzer) -> bool:
    """A stream_fer.Analyzer that is closed, its MediaPipe graph freed."""
    from stream_fer.errors import StreamFerError

    with pytest.raises(StreamFerError, match="closed"):
        analyzer.process(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(RuntimeError, match="closed"):
        analyzer._analyzer.landmarker.detect(np.zeros((32, 32, 3), np.uint8), 10_000)
    return True


def test_a_leaving_visitor_releases_its_analyzer(handlers_with_clock, smile):
    handlers, _clock = handlers_with_clock
    assert len(handlers.live(smile.rgb, "v1", LIVE)["faces"]) == 1
    session = handlers.visitors.peek("v1", "live")
    analyzer = session.analyzer
    assert handlers.visitors.stats().live == 1 and handlers.visitors.stats().sessions == 1

    handlers.leave("v1")
    stats = handlers.visitors.stats()
    assert (stats.live, stats.sessions, stats.created, stats.released) == (0, 0, 1, 1)
    assert handlers.visitors.peek("v1", "live") is None
    assert session.analyzer is None and _closed(analyzer), "its MediaPipe graph is freed"
    handlers.leave("v1")  # leaving twice (unload after an idle release) is harmless
    assert handlers.visitors.stats().released == 1


def test_an_idle_visitor_is_released_after_the_idle_time(handlers_with_clock, smile):
    handlers, clock = handlers_with_clock
    handlers.live(smile.rgb, "v1", LIVE)
    handlers.live(smile.rgb, "v2", LIVE)
    clock.now += 45
    handlers.live(smile.rgb, "v2", LIVE)  # v2 keeps streaming, v1 stopped 45 s ago
    assert handlers.visitors.reap() == 0
    clock.now += 20  # v1 idle 65 s > 60, v2 idle 20 s
    assert handlers.visitors.reap() == 1
    assert handlers.visitors.peek("v1", "live") is None and handlers.visitors.peek("v2", "live") is not None
    assert handlers.visitors.stats().live == 1


def test_a_leave_during_a_running_request_waits_for_it(handlers_with_clock, smile):
    handlers, clock = handlers_with_clock
    handlers.live(smile.rgb, "v1", LIVE)
    with handlers.visitors.lease("v1", "live", lambda: None) as session:
        handlers.leave("v1")
        clock.now += 3600
        assert handlers.visitors.reap() == 0, "a session in use is never reaped"
        assert session.analyzer is not None, "not closed under the running request"
    assert handlers.visitors.peek("v1", "live") is None and session.analyzer is None


def test_the_session_cap_refuses_the_next_visitor_with_one_message(handlers_with_clock, smile):
    from stream_fer.app.visitors import AppBusy
    from stream_fer.errors import StreamFerError

    handlers, _clock = handlers_with_clock
    handlers.live(smile.rgb, "v1", LIVE)
    handlers.live(smile.rgb, "v2", LIVE)
    with pytest.raises(AppBusy) as refused:
        handlers.live(smile.rgb, "v3", LIVE)
    assert isinstance(refused.value, StreamFerError)
    assert str(refused.value) == "the app is busy: 2 visitors are using it right now; try again in a minute"
    assert handlers.visitors.stats().refused == 1 and handlers.visitors.stats().created == 2
    handlers.live(smile.rgb, "v1", LIVE)  # a visitor already in keeps going
    # Photos use the shared pool: they are never refused for lack of a live-session place.
    assert "Face 1 of 1" in handlers.image(smile.rgb, *CONTROLS, 1)[3]
    handlers.leave("v1")
    assert handlers.live(smile.rgb, "v3", LIVE)["faces"], "a place freed is given to the next"


def test_the_shared_photo_analyzers_shrink_back_after_a_busy_spell(app_factory, smile):
    from stream_fer.app.sessions import ImagePool
    from stream_fer.app.settings import AnalysisSettings

    clock = Clock()
    pool = ImagePool(app_factory, keep=3, clock=clock)
    settings = AnalysisSettings(overlays=tuple(OVERLAYS))
    start = threading.Barrier(3)

    def photo():
        start.wait()
        return pool.analyse(smile.rgb, settings)

    with ThreadPoolExecutor(3) as workers:
        results = list(workers.map(lambda _: photo(), range(3)))
    assert all(len(r.result.faces) == 1 for r in results)
    assert 1 <= pool.created <= 3 and pool.idle() == pool.created
    created = pool.created
    clock.now += 10
    assert pool.reap(idle_s=60) == 0
    clock.now += 60
    assert pool.reap(idle_s=60) == created - 1 and pool.idle() == 1, "one warm analyzer stays"
    pool.analyse(smile.rgb, settings)
    assert pool.created == created, "and is used by the next photo"
    pool.close()
    assert pool.idle() == 0


# ------------------------------------------------------------------------------------- served app


@pytest.fixture(scope="module")
def small_server(app_factory, gradio_temp):
    """The app with room for one live session, its heartbeat every 0.5 s (so a client's leaving is seen
    quickly, as a closed browser tab is)."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_helpers import APP_TEST_UPLOAD_MB, free_port

    from stream_fer.app.app import build_app, launch
    from stream_fer.app.settings import AppConfig

    saved = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"
    demo = build_app(AppConfig(max_upload_mb=APP_TEST_UPLOAD_MB, max_sessions=1), app_factory)
    _, url = launch(demo, "127.0.0.1", free_port(), APP_TEST_UPLOAD_MB, block=False, quiet=True)
    try:
        yield url, demo
    finally:
        demo.close()
        demo.handlers.close()
        if saved is None:
            os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
        else:
            os.environ["GRADIO_HEARTBEAT_INTERVAL"] = saved


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_served_app_releases_a_client_that_leaves_and_caps_live_sessions(small_server):
    """A client's RTSP session (to a port nothing listens on) holds the only place: a second client is
    told "busy"; when the first client closes, the app's unload handler releases its session."""
    from app_helpers import free_port
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, demo = small_server
    visitors = demo.handlers.visitors
    before = visitors.stats()
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    try:
        first.predict(f"rtsp://127.0.0.1:{free_port()}/none", *CONTROLS, api_name="/rtsp_start")
        assert visitors.stats().live == 1
        with pytest.raises(AppError) as refused:
            second.predict(f"rtsp://127.0.0.1:{free_port()}/none", *CONTROLS, api_name="/rtsp_start")
        assert str(refused.value) == "the app is busy: 1 visitors are using it right now; try again in a minute"
    finally:
        first.close()
    _wait_for(lambda: visitors.stats().live == 0, 20, "the first client's session to be released")
    assert visitors.stats().released == before.released + 1
    try:
        second.predict(f"rtsp://127.0.0.1:{free_port()}/none", *CONTROLS, api_name="/rtsp_start")
        assert visitors.stats().live == 1, "the freed place went to the waiting visitor"
    finally:
        second.close()
    _wait_for(lambda: visitors.stats().live == 0, 20, "the second client's session to be released")


def test_identical_concurrent_requests_all_get_complete_correct_outputs(app_server, app_handlers, smile,
                                                                       tmp_path):
    """Four visitors send the same photo at the same moment, four times each: every response arrives
    whole, with the picture and the panel the photo gives when analysed alone."""
    from gradio_client import Client, handle_file

    from stream_fer.images import read_rgb

    expected, probs, panel, *_ = app_handlers.image(smile.rgb, *CONTROLS, 1)
    clients = [Client(app_server.url, verbose=False, download_files=str(tmp_path / f"c{i}")) for i in range(4)]
    start = threading.Barrier(len(clients))

    def visitor(client):
        start.wait()
        return [client.predict(handle_file(str(smile.path)), *CONTROLS, 1, api_name="/image") for _ in range(4)]

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            answers = [a for got in pool.map(visitor, clients) for a in got]
    finally:
        for client in clients:
            client.close()
    assert len(answers) == 16
    served = {a[0] for a in answers}
    assert len(served) == 16, "each response has an output file of its own"
    for annotated_path, label, panel_path, summary, _shapes, _share in answers:
        assert np.array_equal(read_rgb(annotated_path), expected)
        assert np.array_equal(read_rgb(panel_path), panel)
        assert {c["label"]: c["confidence"] for c in label["confidences"]} == pytest.approx(probs, abs=1e-5)
        assert "Face 1 of 1" in summary
