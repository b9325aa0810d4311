"""The page in a real browser: Debian's Chromium driven by Playwright.

- Image tab: upload a photo, wait for the annotated photo and the explanation.
- Webcam tab (the live view): Chromium's fake camera plays frames of single_face.mp4 (the smile); one click
  starts live analysis, the page draws the overlay on its own canvas from the results of the live
  websocket, and a screenshot is saved to tmp (STREAM_FER_UPDATE_DOCS=1 copies it to
  docs/app_screenshot.png for the README); a second tab gets its own session; stopping is clean.

Skipped, with the reason, without /usr/bin/chromium (Debian: apt-get install -y chromium) or the playwright
package (pip install playwright; never `playwright install`: the browser is Debian's)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

# Gradio's own queue code trips pandas deprecation warnings in the server's threads; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "app_screenshot.png"


@pytest.fixture(scope="module")
def fake_camera(single_face_video, tmp_path_factory) -> Path:
    """A second of single_face.mp4 around the broad smile (frames 30-59) as a .y4m file, which Chromium's
    fake camera plays in a loop."""
    import av

    path = tmp_path_factory.mktemp("camera") / "single_face.y4m"
    with av.open(str(single_face_video)) as src, av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i < 30:
                continue
            if i >= 60:
                break
            yuv = frame.reformat(format="yuv420p")
            yuv.pts = None
            out.mux(stream.encode(yuv))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def browser(fake_camera):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={fake_camera}"]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + camera, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(app_server.url, wait_until="domcontentloaded", timeout=60_000)
    yield page
    context.close()


def test_image_tab_in_a_real_browser(page, smile):
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-in input[type=file]").set_input_files(str(smile.path))
    page.locator("#image-out img").wait_for(state="visible", timeout=90_000)
    page.locator("#image-explanation img").wait_for(state="visible", timeout=30_000)
    page.locator("#image-summary").get_by_text("Face 1 of 1").wait_for(timeout=30_000)
    page.locator("#image-probs").get_by_text("happiness").first.wait_for(timeout=30_000)

    # The annotated photo the page shows is a real image of the photo's size.
    size = page.locator("#image-out img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [smile.rgb.shape[1], smile.rgb.shape[0]]
    assert not page.errors, page.errors


def _start_live(page):
    page.get_by_role("tab", name="Webcam").click()
    button = page.locator("#webcam-live button.sf-start")
    assert button.inner_text() == "Start live analysis"
    button.click()
    return button


def _drawn(page) -> int:
    return int(page.locator("#webcam-live .sf-live").get_attribute("data-drawn") or 0)


def test_webcam_tab_draws_the_live_overlay_itself(page, browser, app_server, tmp_path):
    visitors = app_server.demo.handlers.visitors
    before = visitors.stats().live
    button = _start_live(page)
    # the button turns once the camera has started (getUserMedia), which takes a moment on a loaded machine
    page.locator("#webcam-live button.sf-start", has_text="Stop live analysis").wait_for(timeout=30_000)
    assert button.inner_text() == "Stop live analysis"
    page.wait_for_function("() => +(document.querySelector('#webcam-live .sf-live').dataset.drawn || 0) >= 15",
                           timeout=90_000)
    page.locator("#webcam-live .sf-panels").get_by_text("Face 1 of 1").wait_for(timeout=30_000)
    # The overlay is drawn on the canvas over the page's own video: coloured pixels on the face, clear
    # pixels far from it; the preview is mirrored, the canvas is not (the drawing mirrors itself).
    stats = page.evaluate("""() => {
        const root = document.querySelector('#webcam-live .sf-live');
        const c = root.querySelector('canvas.sf-overlay'), v = root.querySelector('video');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let drawn = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) drawn++;
        return {drawn: drawn / (d.length / 4), videoW: v.videoWidth, mirrored: getComputedStyle(v).transform,
                canvasTransform: getComputedStyle(c).transform, label: root.sfLive.last.faces[0].label,
                sent: root.sfLive.stats.sent};
    }""")
    assert stats["videoW"] == 640
    assert stats["mirrored"].startswith("matrix(-1"), stats["mirrored"]
    assert stats["canvasTransform"] == "none"
    assert 0.01 < stats["drawn"] < 0.5, stats
    assert stats["label"] == "happiness", "the fake camera plays the broad smile"
    page.locator("#webcam-live .sf-panels").get_by_text("AU12 lip corner puller").first.wait_for(timeout=10_000)

    shot = tmp_path / "app_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("STREAM_FER_UPDATE_DOCS"):  # refresh the README's picture on purpose, never by default
        shutil.copyfile(shot, SCREENSHOT)

    # A second tab gets its own session and does not stall the first.
    second = page.context.new_page()
    try:
        second.goto(app_server.url, wait_until="domcontentloaded", timeout=60_000)
        _start_live(second)
        second.wait_for_function(
            "() => +(document.querySelector('#webcam-live .sf-live').dataset.drawn || 0) >= 5", timeout=90_000)
        assert visitors.stats().live == before + 2
        n = _drawn(page)
        page.wait_for_function(
            "(n) => +(document.querySelector('#webcam-live .sf-live').dataset.drawn || 0) >= n + 5", arg=n,
            timeout=60_000)
    finally:
        second.close()

    # Stopping is clean: the camera is released, the canvas cleared, the session released.
    button.click()
    assert button.inner_text() == "Start live analysis"
    assert page.evaluate("() => document.querySelector('#webcam-live video').srcObject === null")
    deadline = time.monotonic() + 10
    while visitors.stats().live > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert visitors.stats().live == before, "both tabs' sessions are released"
    assert not page.errors, page.errors


def test_rtsp_tab_draws_the_analysed_stream_itself(page, app_server, single_face_video, tmp_path):
    """The RTSP tab: the server analyses the stream; the page draws each analysed frame and its overlay
    (from the watch websocket) on its own canvases, the panels from the same frame."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "stream_fer" / "rtsp_server.py"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    spec = importlib.util.spec_from_file_location("stream_fer_tests_rtsp_server_browser", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with module.RtspServer.from_video(single_face_video, fps=30) as server:
        page.get_by_role("tab", name="RTSP").click()
        page.locator("#rtsp-url textarea, #rtsp-url input").first.fill(server.url)
        page.locator("#rtsp-start").click()
        page.wait_for_function(
            "() => +(document.querySelector('#rtsp-live .sf-live').dataset.drawn || 0) >= 5", timeout=90_000)
        page.locator("#rtsp-live .sf-panels").get_by_text("Face 1 of 1").wait_for(timeout=30_000)
        drawn = page.evaluate("""() => {
            const root = document.querySelector('#rtsp-live .sf-live');
            const px = (c) => {  // share of pixels drawn and not near-black
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] + d[i + 1] + d[i + 2] > 60) n++;
                return n / (d.length / 4);
            };
            return {frame: px(root.querySelector('canvas.sf-frame')),
                    overlay: px(root.querySelector('canvas.sf-overlay'))};
        }""")
        assert drawn["frame"] > 0.3, "the analysed frames are drawn"
        assert 0.005 < drawn["overlay"] < 0.5, drawn
        page.screenshot(path=str(tmp_path / "rtsp.png"), full_page=True)
        if os.environ.get("STREAM_FER_RTSP_SHOT"):  # to look at it
            shutil.copyfile(tmp_path / "rtsp.png", os.environ["STREAM_FER_RTSP_SHOT"])
        page.locator("#rtsp-stop").click()
        page.locator("#rtsp-status").get_by_text("Stopped").wait_for(timeout=30_000)
        page.wait_for_function("() => !document.querySelector('#rtsp-live .sf-live').sfLive.running",
                               timeout=10_000)
    assert not page.errors, page.errors
