"""The live view as a user sees it: Debian's Chromium (Playwright) with a file-backed fake camera, and a real
`stream-fer serve` on the same machine.

The camera clip is made from a real shared clip (single_face.mp4, played forwards then backwards so every
frame index is distinct over the loop): 640x480 at 15 fps, each frame's index stamped in the top-left
corner as a 12-bit barcode (16 px blocks, in the letterbox bar above the picture). A script added to the
page reads the barcode of every camera frame the page's <video> presents (requestVideoFrameCallback) and
of every frame the live view sends up (its sf-capture event), and notes every overlay the page draws (its
sf-overlay event). From those it reports, over `--seconds` (default 60):

- overlay updates per second;
- capture-to-overlay latency: from the moment the page presented a camera frame to the moment the overlay
  computed from that frame was drawn (median, p95);
- the share of camera frames whose analysis was drawn;
- freezes: gaps between overlay updates over 500 ms (and the longest);
- the growth of the server's temp folder (TMPDIR and Gradio's cache) while streaming.

Last line: `browser: overlay F fps, latency median M ms p95 P ms, freezes K, temp growth T MB`

    python benchmarks/browser.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT, FPS = 640, 480, 15
BITS, BLOCK = 12, 16

# Added to the page before it loads: barcode reader and event log. The barcode's block i is centred at
# (BLOCK/2 + BLOCK*i, BLOCK/2) in 640-px camera coordinates; bright = 1.
PAGE_PROBE = """
(() => {
  const BITS = @BITS@, BLOCK = @BLOCK@, W = @WIDTH@;
  const log = window.__sfBench = {presented: [], captures: {}, overlays: []};
  const probe = document.createElement('canvas'); probe.width = BITS * BLOCK; probe.height = BLOCK;
  const pctx = probe.getContext('2d', {willReadFrequently: true});
  function read(source, scale) {  // the index stamped in a drawable's top-left corner
    pctx.drawImage(source, 0, 0, BITS * BLOCK * scale, BLOCK * scale, 0, 0, BITS * BLOCK, BLOCK);
    const d = pctx.getImageData(0, 0, BITS * BLOCK, BLOCK).data;
    let v = 0;
    for (let i = 0; i < BITS; i++) {
      const x = Math.round(BLOCK / 2 + BLOCK * i), y = Math.round(BLOCK / 2), k = 4 * (y * BITS * BLOCK + x);
      if (d[k] + d[k + 1] + d[k + 2] > 3 * 128) v |= (1 << i);
    }
    return v;
  }
  function watch(video) {
    const onFrame = (now, meta) => {
      if (video.videoWidth) log.presented.push([read(video, video.videoWidth / W), now]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  document.addEventListener('sf-capture', (ev) => {
    const c = ev.detail.canvas;
    log.captures[ev.detail.id] = [read(c, c.width / W), ev.detail.time];
  });
  document.addEventListener('sf-overlay', (ev) => log.overlays.push([ev.detail.id, ev.detail.time, ev.detail.faces]));
  const wait = setInterval(() => {
    const v = document.querySelector('#webcam-live video');
    if (v) { clearInterval(wait); watch(v); }
  }, 50);
})();
""".replace("@BITS@", str(BITS)).replace("@BLOCK@", str(BLOCK)).replace("@WIDTH@", str(WIDTH))


def make_camera_clip(source: Path, out: Path) -> int:
    """single_face.mp4 forwards then backwards, letterboxed to 640x480, index barcode in the top bar."""
    import av
    import cv2
    import numpy as np

    frames = []
    with av.open(str(source)) as src:
        for frame in src.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    sequence = frames + frames[-2:0:-1]
    with av.open(str(out), "w", format="yuv4mpegpipe") as dst:
        stream = dst.add_stream("rawvideo", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index, rgb in enumerate(sequence):
            canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            h = round(WIDTH * rgb.shape[0] / rgb.shape[1])
            y0 = (HEIGHT - h) // 2
            canvas[y0:y0 + h] = cv2.resize(rgb, (WIDTH, h), interpolation=cv2.INTER_AREA)
            canvas[:BLOCK, :BITS * BLOCK] = 0
            for bit in range(BITS):
                if index >> bit & 1:
                    canvas[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255
            vf = av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")
            dst.mux(stream.encode(vf))
        dst.mux(stream.encode())
    return len(sequence)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def pct(values, q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of streaming before measuring")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright
    from stream_fer.train.paths import shared_dir

    clip = Path(shared_dir()) / "videos" / "single_face.mp4"
    work = Path(tempfile.mkdtemp(prefix="stream-fer-browser-"))
    camera = work / "camera.y4m"
    n_frames = make_camera_clip(clip, camera)
    server_tmp = work / "server-tmp"
    server_tmp.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(server_tmp), GRADIO_TEMP_DIR=str(server_tmp / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-m", "stream_fer.cli", "serve", "--port", str(port),
                             "--backend", "onnxruntime"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "serving on" in line:
            break
    else:
        raise SystemExit(f"the server did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    chromium_args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={camera}"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args, headless=True)
            context = browser.new_context(viewport={"width": 1440, "height": 1000}, permissions=["camera"])
            page = context.new_page()
            page.add_init_script(PAGE_PROBE)
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#webcam-live button.sf-start").click()
            page.wait_for_function("() => window.__sfBench && window.__sfBench.overlays.length > 0", timeout=90_000)
            time.sleep(args.warmup)
            temp_before = folder_mb(server_tmp)
            cpu0, load0 = cpu_s(proc.pid), os.getloadavg()[0]
            t0 = page.evaluate("() => performance.now()")
            time.sleep(args.seconds)
            t1 = page.evaluate("() => performance.now()")
            cpu1, load1 = cpu_s(proc.pid), os.getloadavg()[0]
            temp_after = folder_mb(server_tmp)
            log = page.evaluate("() => window.__sfBench")
            view = page.evaluate("() => document.querySelector('#webcam-live .sf-live').sfLive.stats")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    presented = [(int(i), float(t)) for i, t in log["presented"] if t0 <= t <= t1]
    overlays = [(int(i), float(t), n) for i, t, n in log["overlays"] if t0 <= t <= t1]
    captures = {int(k): (int(v[0]), float(v[1])) for k, v in log["captures"].items()}
    # every presentation of a camera frame in the window, in time order per index
    by_index: dict[int, list[float]] = {}
    for index, t in sorted(log["presented"], key=lambda e: e[1]):
        by_index.setdefault(int(index), []).append(float(t))
    latencies, covered, unreadable = [], set(), 0
    for frame_id, t, _faces in overlays:
        if frame_id not in captures or captures[frame_id][0] >= n_frames:
            unreadable += 1
            continue
        index, t_capture = captures[frame_id]
        # the presentation it was captured at: the latest one of that index just before the capture (the
        # clip loops every n_frames / FPS s, so an older presentation of the same index is a wrong match)
        shown = [s for s in by_index.get(index, []) if t_capture - 1000.0 <= s <= t_capture + 50.0]
        if not shown:
            unreadable += 1
            continue
        t_presented = max(shown)
        latencies.append(t - t_presented)
        covered.add((index, round(t_presented)))
    seconds = (t1 - t0) / 1000.0
    fps = len(overlays) / seconds
    times = [t for _, t, _ in overlays]
    gaps = [b - a for a, b in zip([t0, *times], [*times, t1], strict=True)]
    freezes = [g for g in gaps if g > 500]
    camera_frames = len(presented)
    share = len(covered) / camera_frames if camera_frames else float("nan")
    with_face = sum(1 for _, _, n in overlays if n) / len(overlays) if overlays else 0.0

    print(f"camera: {n_frames}-frame clip at {FPS} fps, {WIDTH}x{HEIGHT}; the page presented {camera_frames} "
          f"camera frames in {seconds:.1f} s ({camera_frames / seconds:.1f} fps)")
    print(f"overlay: {len(overlays)} updates, {fps:.1f} fps; {with_face:.0%} with a face; "
          f"{unreadable} overlays whose camera frame could not be matched")
    print(f"latency (camera frame presented -> its overlay drawn): median {statistics.median(latencies):.0f} ms, "
          f"p95 {pct(latencies, 0.95):.0f} ms, max {max(latencies):.0f} ms ({len(latencies)} matched)")
    print(f"camera frames with an overlay: {share:.0%}; the page sent {view['sent']} frames, got {view['results']} "
          f"results, drew {view['drawn']} overlays; the server dropped {view['dropped']} overtaken frames")
    print(f"server CPU: {cpu1 - cpu0:.1f} s in {seconds:.0f} s, {1000 * (cpu1 - cpu0) / max(1, len(overlays)):.1f} ms "
          f"per overlay; machine load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores")
    print(f"freezes > 500 ms: {len(freezes)} (longest gap {max(gaps):.0f} ms)")
    print(f"temp folder: {temp_before:.2f} -> {temp_after:.2f} MB while streaming")
    print(f"browser: overlay {fps:.1f} fps, latency median {statistics.median(latencies):.0f} ms "
          f"p95 {pct(latencies, 0.95):.0f} ms, freezes {len(freezes)}, temp growth {temp_after - temp_before:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
