"""The app's long-running work, on the CLI's own machinery: a video file annotated by run_pipeline into
an H.264 file and a CSV (what `stream-fer run` writes), and an RTSP stream read by run_pipeline in a
background thread into a "latest frame" sink that the page polls."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_fer.app.sessions import Analysed, AnalyzerFactory
from stream_fer.app.settings import AnalysisSettings, check_rtsp_url
from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame, FrameResult

log = logging.getLogger(__name__)

TIMELINE_MAX_POINTS = 1500  # per series: a longer video is subsampled for the plot (the CSV has every frame)
JOB_TTL_S = 3600  # a job's output folder is removed after this (gradio has copied the files it serves)


def new_job_dir() -> Path:
    """A fresh folder for one job's outputs under <tmp>/stream-fer-app; folders older than JOB_TTL_S go."""
    root = Path(tempfile.gettempdir()) / "stream-fer-app"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.glob("job-*"):
        try:
            if now - old.stat().st_mtime > JOB_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="job-", dir=root))


def _run_pipeline(source, analyzer, sinks, on_frame=None):
    """The CLI's pipeline, without its terminal progress bar; it closes the source and the sinks."""
    from stream_fer.pipeline import run_pipeline

    return run_pipeline(source, analyzer, sinks, progress=False, on_frame=on_frame)


# ------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class VideoJob:
    video: Path  # annotated H.264 mp4
    csv: Path  # one row per face per frame (records.ROW_FIELDS)
    timeline: object  # pandas DataFrame: time_s, probability, series
    summary: str  # Markdown
    frames: int


def annotate_video(video: Path, out_dir: Path, factory: AnalyzerFactory, settings: AnalysisSettings,
                   progress: Callable[[int, int | None], None] | None = None,
                   max_frames: int | None = None) -> VideoJob:
    """Annotate an (already checked) uploaded video the way `stream-fer run` does. `progress(done, total)`
    is called from this thread only (gr.Progress must be called from the handler's thread)."""
    from stream_fer.records import ROW_FIELDS
    from stream_fer.sinks import CsvSink, VideoSink
    from stream_fer.sources import FileSource

    source = FileSource(video)
    try:
        info = source.open()
        if max_frames and info.frame_count and info.frame_count > max_frames:
            raise StreamFerError(f"the video has {info.frame_count} frames; this server accepts at most {max_frames}")
        stem = Path(video).stem[:60] or "video"
        out_video, out_csv = out_dir / f"{stem}_annotated.mp4", out_dir / f"{stem}_frames.csv"
        analyzer = factory.create(settings, mode="video")
        try:
            sinks = [VideoSink(out_video, info)]
            try:
                sinks.append(CsvSink(out_csv, ROW_FIELDS))
            except BaseException:
                sinks[0].close()
                raise
            counter = _FrameCounter()
            stats = _in_thread(lambda: _run_pipeline(source, analyzer, sinks, on_frame=counter),
                               lambda: progress and progress(counter.done, info.frame_count))
        finally:
            analyzer.close()
    finally:
        source.close()
    timeline, tracks = timeline_from_csv(out_csv)
    summary = (f"**{stats.frames_out} frames** annotated in {stats.wall_s:.1f} s ({stats.fps:.1f} fps), "
               f"faces in {stats.frames_with_faces} of them, {tracks} face track(s); engine "
               f"{getattr(analyzer.engine, 'name', '?')}.")
    return VideoJob(out_video, out_csv, timeline, summary, stats.frames_out)


class _FrameCounter:
    """The pipeline's on_frame callback: counts frames written (called from the pipeline's sink thread)."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, frame, result) -> None:
        self.done += 1


def _in_thread(work: Callable, tick: Callable, every: float = 0.25):
    """Run `work` in a worker thread, calling `tick()` in this thread every `every` s until it finishes;
    its result, or its exception re-raised here."""
    box: dict = {}

    def target():
        try:
            box["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread and re-raised
            box["error"] = exc

    thread = threading.Thread(target=target, name="app-video-job", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(every)
        tick()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def timeline_from_csv(csv_path: Path):
    """(long table for the plot, number of face tracks): smoothed probability per class per track over
    time, from the CSV the pipeline wrote (so the plot shows exactly what the file says)."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    cols = [c for c in df.columns if c.startswith("p_")]
    faces = df.dropna(subset=["track_id"]) if "track_id" in df else df.iloc[0:0]
    if faces.empty or not cols:
        return pd.DataFrame({"time_s": [], "probability": [], "series": []}), 0
    tracks = sorted(faces["track_id"].astype(int).unique())
    parts = []
    for track in tracks:
        rows = faces[faces["track_id"].astype(int) == track]
        step = max(1, len(rows) // TIMELINE_MAX_POINTS)
        rows = rows.iloc[::step]
        for col in cols:
            name = col[2:]
            series = name if len(tracks) == 1 else f"face {track}: {name}"
            parts.append(pd.DataFrame({"time_s": rows["timestamp"].astype(float).to_numpy(),
                                       "probability": rows[col].astype(float).to_numpy(), "series": series}))
    return pd.concat(parts, ignore_index=True), len(tracks)


# ------------------------------------------------------------------------------------------- RTSP


class LatestSink:
    """A pipeline sink that keeps only the newest analysed frame, for a page to poll."""

    def __init__(self, crop_size: int, class_names: tuple[str, ...]) -> None:
        self._crop_size = crop_size
        self._class_names = class_names
        self._lock = threading.Lock()
        self._latest: Analysed | None = None
        self._taken: int | None = None
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult, annotated) -> None:
        with self._lock:
            self._latest = Analysed(frame.rgb, annotated, result, self._crop_size, self._class_names)
            self.frames += 1

    def take_new(self) -> Analysed | None:
        """The newest frame if it was not taken before, else None."""
        with self._lock:
            latest = self._latest
            if latest is None or self._taken == self.frames:
                return None
            self._taken = self.frames
            return latest

    def close(self) -> None:
        pass


class RtspSession:
    """One visitor's RTSP stream: the URL is checked (rtsp:// only), an analyzer is built in the calling
    thread (so a bad backend is reported at once), and the CLI's pipeline runs in a background thread
    until the stream ends for good or stop() is called. The source reconnects by itself after a drop;
    status() says what it is doing."""

    def __init__(self, url: str, factory: AnalyzerFactory, settings: AnalysisSettings,
                 source_factory: Callable | None = None) -> None:
        self.url = check_rtsp_url(url)
        self.settings = settings
        self._factory = factory
        self._source_factory = source_factory
        self._source = None
        self._analyzer = None
        self._sink: LatestSink | None = None
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._stopped = False
        self._started_at: float | None = None

    def start(self) -> None:
        from stream_fer.sources import RtspSource

        self._analyzer = self._factory.create(self.settings, mode="video")
        self._sink = LatestSink(int(self._analyzer.crop_size), tuple(self._analyzer.class_names))
        self._source = (self._source_factory or RtspSource)(self.url)
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="app-rtsp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _run_pipeline(self._source, self._analyzer, [self._sink])
        except StreamFerError as exc:
            self._error = str(exc)
        except Exception as exc:  # keep the server up; show the visitor what happened
            log.exception("app: RTSP pipeline failed")
            self._error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            try:
                self._source.close()
            finally:
                self._analyzer.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take_new(self) -> Analysed | None:
        return self._sink.take_new() if self._sink is not None else None

    def status(self) -> str:
        from stream_fer.sources import SourceState, redact

        name = redact(self.url)
        source = self._source
        frames = self._sink.frames if self._sink else 0
        if self._error:
            return f"⚠️ {self._error}"
        if source is None:
            return "Not started."
        state = getattr(source, "state", None)
        dropped = getattr(source, "dropped", 0)
        reconnects = getattr(source, "reconnects", 0)
        counts = f"{frames} frames analysed, {dropped} dropped to stay live" + (
            f", reconnected {reconnects}×" if reconnects else "")
        if self._stopped and not self.running:
            return f"Stopped `{name}` ({counts})."
        if state == SourceState.RECONNECTING:
            return f"⚠️ The stream `{name}` dropped; reconnecting… ({counts})"
        if state in (SourceState.IDLE, SourceState.CONNECTING):
            return f"Connecting to `{name}`…"
        if not self.running:
            return f"The stream `{name}` ended ({counts})."
        return f"▶️ Live: `{name}` ({counts})"

    def stop(self) -> None:
        self._stopped = True
        if self._source is not None:
            self._source.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    close = stop
