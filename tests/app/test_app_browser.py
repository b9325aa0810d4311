"""The page in a real browser: Debian's Chromium driven by Playwright.

- Image tab: upload a photo, wait for the annotated photo and the explanation, save a screenshot to
  tmp (STREAM_FER_UPDATE_DOCS=1 copies it to docs/app_screenshot.png for the README).
- Webcam tab: Chromium's fake camera plays frames of single_face.mp4; pressing Record streams them to the
  app, which streams annotated frames and the panels back.

Skipped, with the reason, without /usr/bin/chromium (Debian: apt-get install -y chromium) or the playwright
package (pip install playwright; never `playwright install`: the browser is Debian's)."""

from __future__ import annotations

import os
import shutil
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
    """The first second of single_face.mp4 as a .y4m file, which Chromium's fake camera plays in a loop."""
    import av

    path = tmp_path_factory.mktemp("camera") / "single_face.y4m"
    with av.open(str(single_face_video)) as src, av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i >= 30:
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


def test_image_tab_in_a_real_browser(page, smile, tmp_path):
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

    shot = tmp_path / "app_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("STREAM_FER_UPDATE_DOCS"):  # refresh the README's picture on purpose, never by default
        shutil.copyfile(shot, SCREENSHOT)


def test_webcam_tab_streams_annotated_frames_back(page):
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#webcam-in").get_by_text("Click to Access Webcam").click()
    page.locator("#webcam-in").get_by_text("Record").click()
    page.locator("#webcam-out img").wait_for(state="visible", timeout=60_000)
    summary = page.locator("#webcam-summary")
    summary.get_by_text("Face 1 of 1").wait_for(timeout=60_000)
    first = int(summary.inner_text().split("frame ")[1].split(",")[0])
    # Frames keep coming: the frame counter in the summary moves on.
    page.wait_for_function(
        "([el, n]) => { const m = el.innerText.match(/frame (\\d+),/); return m && +m[1] >= n + 5; }",
        arg=[summary.element_handle(), first], timeout=60_000)
    page.locator("#webcam-explanation img").wait_for(state="visible", timeout=30_000)
    page.locator("#webcam-in").get_by_text("Stop").click()
    assert not page.errors, page.errors
