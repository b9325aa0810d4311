"""The app under load, as a lab or a demo leaves it running: a real `stream-fer serve` in its own process,
driven over HTTP by gradio_client for a few minutes.

Waves of new visitors arrive; each visitor is one gradio_client Client (its own Gradio session) and makes
photo requests on the Image endpoint (half of the visitors of a wave send the same photo at the same
moment, the others different photos) while one visitor of the wave annotates a video on the File
endpoint; where the live endpoint exists (stream_fer.app.live), each visitor also streams frames of a
clip to it for a few seconds. Then the wave's visitors leave (client.close(): the page's heartbeat ends,
as when a tab closes). Every answer is checked (annotated photo of the right size, a summary, a video
and a CSV), so a response cut short or mixed up counts as a failure.

It prints the requests made, failures, latency median/p95 per endpoint, and the server's RSS (from
/proc) at start (after start-up and one warm-up visitor, whose first requests import and cache what all
later requests reuse; the fresh figure is printed too), at its peak, and after the visitors left and the
documented idle time passed (`--after-s`, default 45 s: Gradio notices a closed client at its next
heartbeat, every 15 s; the server runs with `--session-idle 30`, so an idle live session, and photo
analyzers of the shared pool beyond the one kept warm, go after 30 s unused). Last line:

    app load: R requests, F failed, p95 L s, rss start S MB peak P MB after A MB

    python benchmarks/app_load.py [--waves 4] [--visitors 6] [--photos 3] [--max-sessions 8] [--idle-s 30]
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

OVERLAYS = ["attention", "au_regions", "bars", "box", "label"]
CONTROLS = ("auto", 1, "ema", 0.6, OVERLAYS)


def shared_dir() -> Path:
    from stream_fer.train.paths import shared_dir as find

    return Path(find())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0.0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Tally:
    latency: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, endpoint: str, seconds: float) -> None:
        with self.lock:
            self.latency.setdefault(endpoint, []).append(seconds)

    def failed(self, endpoint: str, why: str) -> None:
        with self.lock:
            self.latency.setdefault(endpoint, [])
            self.failures.append(f"{endpoint}: {why}")

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latency.values()) + len(self.failures)


def start_server(port: int, max_sessions: int, idle_s: float, temp: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_TEMP_DIR=str(temp / "gradio"), GRADIO_ANALYTICS_ENABLED="False",
               TMPDIR=str(temp))
    cmd = [sys.executable, "-m", "stream_fer.cli", "serve", "--port", str(port), "--backend", "onnxruntime",
           "--max-sessions", str(max_sessions), "--session-idle", str(idle_s)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if "serving on" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise SystemExit(f"the server did not start (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
    return proc


def photo_request(client, photo: Path, size: tuple[int, int], tally: Tally) -> None:
    from gradio_client import handle_file

    from stream_fer.images import read_rgb

    t0 = time.monotonic()
    try:
        annotated, probs, panel, summary, _shapes, _share = client.predict(
            handle_file(str(photo)), *CONTROLS, 1, api_name="/image")
        got = read_rgb(annotated).shape[:2]
        if got != size:
            raise ValueError(f"annotated photo is {got}, expected {size}")
        if not ("Face 1 of" in summary or "No face" in summary):
            raise ValueError(f"odd summary {summary[:60]!r}")
        if panel is not None:
            read_rgb(panel)
    except Exception as exc:  # noqa: BLE001 - every kind of failure is counted and shown
        tally.failed("image", f"{type(exc).__name__}: {str(exc)[:120]}")
        return
    tally.ok("image", time.monotonic() - t0)


def file_request(client, video: Path, frames: int, tally: Tally) -> None:
    import pandas as pd
    from gradio_client import handle_file

    t0 = time.monotonic()
    try:
        out, csv_path, _timeline, summary = client.predict(handle_file(str(video)), *CONTROLS, api_name="/video")
        path = out["video"] if isinstance(out, dict) else out
        if not Path(path).is_file() or Path(path).stat().st_size < 10_000:
            raise ValueError("no annotated video")
        rows = len(pd.read_csv(csv_path))
        if rows != frames:
            raise ValueError(f"CSV has {rows} rows, expected {frames}")
    except Exception as exc:  # noqa: BLE001
        tally.failed("file", f"{type(exc).__name__}: {str(exc)[:120]}")
        return
    tally.ok("file", time.monotonic() - t0)


def live_requests(url: str, frames: list, seconds: float, tally: Tally) -> None:
    """Stream frames to the live endpoint for `seconds` (when the app has one)."""
    if seconds <= 0:
        return
    try:
        from stream_fer.app.live import LiveClient
    except ImportError:
        return
    try:
        with LiveClient(url) as live:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                t0 = time.monotonic()
                result = live.send(frames[i % len(frames)])
                if "faces" not in result:
                    raise ValueError(f"odd live result {str(result)[:80]}")
                tally.ok("live", time.monotonic() - t0)
                i += 1
    except Exception as exc:  # noqa: BLE001
        tally.failed("live", f"{type(exc).__name__}: {str(exc)[:120]}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--visitors", type=int, default=6, help="new visitors per wave")
    parser.add_argument("--photos", type=int, default=3, help="photo requests per visitor")
    parser.add_argument("--live-s", type=float, default=4.0, help="seconds each visitor streams to the live endpoint")
    parser.add_argument("--max-sessions", type=int, default=8)
    parser.add_argument("--pause-s", type=float, default=5.0, help="between waves")
    parser.add_argument("--idle-s", type=float, default=30.0, help="the server's --session-idle")
    parser.add_argument("--after-s", type=float, default=45.0, help="idle time before the 'after' RSS")
    args = parser.parse_args(argv)

    from gradio_client import Client

    from stream_fer.images import read_rgb

    shared = shared_dir()
    stills = sorted((shared / "videos" / "stills").glob("*.png"))
    video = shared / "videos" / "single_face.mp4"
    if not stills or not video.is_file():
        raise SystemExit(f"needs the shared stills and single_face.mp4 under {shared}")
    sizes = {p: read_rgb(p).shape[:2] for p in stills}
    same = next((p for p in stills if p.name == "single_face_f0036.png"), stills[0])
    from stream_fer.sources import FileSource

    with FileSource(video) as src:
        clip = [f.rgb for f in src]
    live_frames = clip[::3]

    temp = Path(tempfile.mkdtemp(prefix="stream-fer-load-"))
    port = free_port()
    t_start = time.monotonic()
    proc = start_server(port, args.max_sessions, args.idle_s, temp)
    url = f"http://127.0.0.1:{port}/"
    try:
        time.sleep(2.0)
        rss_fresh = rss_mb(proc.pid)
        # One visitor first, not counted: the first request of each kind imports and caches what every
        # later one reuses (Gradio's request path, pandas for the timeline, x264); that is not per visitor.
        warm = Tally()
        client = Client(url, verbose=False, download_files=str(temp / "warm"))
        try:
            photo_request(client, same, sizes[same], warm)
            file_request(client, video, len(clip), warm)
            live_requests(url, live_frames, min(args.live_s, 2.0), warm)
        finally:
            client.close()
        if warm.failures:
            raise SystemExit(f"the warm-up visitor failed: {warm.failures}")
        time.sleep(args.after_s)
        rss_start = rss_mb(proc.pid)
        sampler = RssSampler(proc.pid)
        sampler.start()
        tally = Tally()
        print(f"server pid {proc.pid} on {url}: rss fresh {rss_fresh:.0f} MB, after one warm-up visitor and "
              f"{args.after_s:.0f} s idle {rss_start:.0f} MB (the start figure)")
        for wave in range(args.waves):
            clients = [Client(url, verbose=False, download_files=str(temp / f"w{wave}c{i}"))
                       for i in range(args.visitors)]

            def visit(i: int, client) -> None:
                photos = [same] * args.photos if i % 2 == 0 else [stills[(i + k) % len(stills)]
                                                                 for k in range(args.photos)]
                for photo in photos:
                    photo_request(client, photo, sizes[photo], tally)
                live_requests(url, live_frames, args.live_s, tally)

            with ThreadPoolExecutor(args.visitors + 1) as pool:
                jobs = [pool.submit(visit, i, c) for i, c in enumerate(clients)]
                jobs.append(pool.submit(file_request, clients[-1], video, len(clip), tally))
                for job in jobs:
                    job.result()
            for client in clients:
                client.close()
            print(f"wave {wave + 1}/{args.waves}: {args.visitors} visitors done, {tally.requests} requests so far, "
                  f"{len(tally.failures)} failed; rss {rss_mb(proc.pid):.0f} MB (peak {sampler.peak:.0f})")
            time.sleep(args.pause_s)
        left_at = time.monotonic()
        time.sleep(args.after_s)
        rss_after = rss_mb(proc.pid)
        sampler.stop()
        peak = max(sampler.peak, rss_after)
        wall = time.monotonic() - t_start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    all_latency = [v for vs in tally.latency.values() for v in vs]
    for endpoint, values in sorted(tally.latency.items()):
        fails = sum(1 for f in tally.failures if f.startswith(endpoint + ":"))
        print(f"  {endpoint:5s}: {len(values) + fails} requests, {fails} failed, latency median "
              f"{pct(values, 0.5):.2f} s, p95 {pct(values, 0.95):.2f} s")
    for failure in tally.failures[:10]:
        print(f"  failure: {failure}")
    print(f"rss: start {rss_start:.0f} MB, peak {peak:.0f} MB, after {rss_after:.0f} MB "
          f"({args.after_s:.0f} s after the last visitor left at {left_at - t_start:.0f} s); wall {wall:.0f} s")
    median = statistics.median(all_latency) if all_latency else float("nan")
    print(f"all requests: median {median:.2f} s")
    print(f"app load: {tally.requests} requests, {len(tally.failures)} failed, p95 {pct(all_latency, 0.95):.2f} s, "
          f"rss start {rss_start:.0f} MB peak {peak:.0f} MB after {rss_after:.0f} MB")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
