"""The public Python API: `analyze` for a whole source, `Analyzer` for your own frame loop, `Results`.

    import stream_fer

    res = stream_fer.analyze("clip.mp4", parquet="clip.parquet", report="clip.html")
    df = res.to_pandas()                 # one row per face per frame, typed (stream_fer.results)
    res.summary()                        # per track: time tracked, expression shares, trust
    for fr in stream_fer.analyze(0, max_frames=300):   # lazily, frame by frame (a webcam here)
        ...

    with stream_fer.Analyzer(max_faces=2) as a:          # your own loop (RGB uint8 frames)
        result, annotated = a.process(rgb, annotate=True)

`analyze` is the one per-video function: `stream-fer run`, batch workers and the tests all go through it,
and it writes every output itself. With any output (out, csv, jsonl, parquet, report) it analyses the
whole source before it returns; without, it returns at once and analyses as you iterate (or when you ask
for a table). Both run the same pipeline (stream_fer.pipeline: threaded by default, `pipeline="sequential"`
for one core per video) over the same FrameAnalyzer; `analyzer=` lends it an Analyzer to reuse, so one
process analyses many videos in turn with its models loaded once (what batch workers do).

Bad input raises one StreamFerError whose message is the line the CLI prints after "stream-fer: error: ".
Heavy runtimes (ONNX Runtime, MediaPipe, pandas) load when an analysis starts, not on import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame, FrameResult
from stream_fer.reading import MIRROR_BELOW, check_mirror_below
from stream_fer.sinks import DEFAULT_PRESET
from stream_fer.sources import Source, VideoInfo

if TYPE_CHECKING:
    import pandas as pd

    from stream_fer.pipeline import PipelineStats
    from stream_fer.render import OverlayOptions

log = logging.getLogger(__name__)

OVERLAY_NAMES = ("box", "label", "bars", "attention", "au_regions", "panel")
_END = object()
_POLL = 0.1  # seconds between checks while waiting on the hand-off queue


# ------------------------------------------------------------------------------------------ options


def overlay_options(overlays: OverlayOptions | Mapping[str, bool] | Iterable[str] | None) -> OverlayOptions:
    """Which overlays to draw: None (the default set), an OverlayOptions, a mapping such as
    {"attention": False}, or the names to draw, e.g. {"box", "label"} (names: OVERLAY_NAMES)."""
    from stream_fer.render import OverlayOptions

    if overlays is None:
        return OverlayOptions()
    if isinstance(overlays, OverlayOptions):
        return overlays
    if isinstance(overlays, str):
        overlays = [overlays]
    fields = {f.name for f in dataclasses.fields(OverlayOptions)}
    if isinstance(overlays, Mapping):
        unknown = sorted(set(overlays) - fields)
        if unknown:
            raise StreamFerError(f"unknown overlay {unknown[0]!r}; choose from {', '.join(OVERLAY_NAMES)}")
        return OverlayOptions(**dict(overlays))
    names = set(overlays)
    unknown = sorted(names - set(OVERLAY_NAMES))
    if unknown:
        raise StreamFerError(f"unknown overlay {unknown[0]!r}; choose from {', '.join(OVERLAY_NAMES)}")
    return OverlayOptions(**{n: n in names for n in OVERLAY_NAMES})


def _check_analysis_options(max_faces: int, threads: int, smoothing: str, smoothing_strength: float,
                            max_frames: int | None = None) -> None:
    from stream_fer.smoothing import make_smoother

    if not isinstance(max_faces, int) or max_faces < 1:
        raise StreamFerError(f"max_faces must be a whole number of at least 1, not {max_faces!r}")
    if not isinstance(threads, int) or threads < 1:
        raise StreamFerError(f"threads must be a whole number of at least 1, not {threads!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise StreamFerError(f"max_frames must be a whole number of at least 1, not {max_frames!r}")
    make_smoother(smoothing, smoothing_strength)  # a bad name or strength fails before the model loads


# Faces down to this height (px) are looked for; stream_fer.discovery.DEFAULT_MIN_FACE, written out here so
# `import stream_fer` does not load OpenCV (tests/test_small_faces.py checks the two agree).
DEFAULT_MIN_FACE = 40


def _check_min_face(min_face) -> None:
    if isinstance(min_face, bool) or not isinstance(min_face, (int, float)) or not min_face >= 0:
        raise StreamFerError(f"min_face must be a face height in px >= 0 (0: no small-face search), not {min_face!r}")


def _load_engine(engine, model, backend: str, threads: int, announce: Callable[[str], None] | None,
                 mirror: bool = True):
    if engine is not None:
        return engine
    from stream_fer.engines.select import load_engine

    return load_engine(model, backend=backend, threads=threads, report=announce, mirror=mirror)


def _as_rgb(rgb: Any) -> np.ndarray:
    """A frame as a contiguous (H, W, 3) uint8 array, or one StreamFerError saying what is wrong."""
    if not isinstance(rgb, np.ndarray):
        raise StreamFerError(f"a frame must be a numpy array (H, W, 3) of uint8 RGB, not {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise StreamFerError(f"a frame must be an (H, W, 3) uint8 RGB array, not {rgb.dtype} of shape "
                             f"{tuple(rgb.shape)}")
    return np.ascontiguousarray(rgb)


# ------------------------------------------------------------------------------------------ sources


class _ArraySource(Source):
    """RGB numpy frames from any iterable (a list, a generator, an (N, H, W, 3) array), stamped at `fps`.
    Never drops a frame: iteration is as slow as the pipeline. One (H, W, 3) array is a still image."""

    live = False

    def __init__(self, frames: Iterable[np.ndarray], fps: float = 30.0, image: bool = False) -> None:
        super().__init__()
        self._frames = frames
        self._fps = float(fps)
        self._image = image
        self._iter: Iterator | None = None
        self._first: np.ndarray | None = None

    def open(self) -> VideoInfo:
        self._iter = iter(self._frames)
        first = next(self._iter, None)
        if first is None:
            raise StreamFerError("no frames to analyze: the iterable of frames is empty")
        self._first = _as_rgb(first)
        h, w = self._first.shape[:2]
        try:
            count = len(self._frames)  # type: ignore[arg-type]
        except TypeError:
            count = None
        what = "image" if self._image else f"{count} frames" if count is not None else "frames"
        self.info = VideoInfo(width=w, height=h, fps=None if self._image else self._fps, time_base=None,
                              frame_count=count, codec="image" if self._image else "rgb", live=False,
                              description=f"numpy RGB {what} {w}x{h}")
        return self.info

    def __iter__(self) -> Iterator[Frame]:
        if self.info is None:
            self.open()
        index = 0
        if self._first is not None and not self._stop.is_set():
            first, self._first = self._first, None
            yield Frame(index=0, timestamp=0.0, capture_time=time.monotonic(), rgb=first)
            index = 1
        for rgb in self._iter:
            if self._stop.is_set():
                break
            yield Frame(index=index, timestamp=index / self._fps, capture_time=time.monotonic(), rgb=_as_rgb(rgb))
            index += 1


def _early_landmarker(source: Any, landmarker, max_faces: int, min_face: float):
    """A LandmarkerLoad started before the input is opened, in the mode its name tells (video unless an image
    file or one image array; the analyzer rebuilds it on a wrong guess); None for a path that is not a file or
    an input open_source refuses, whose error comes first."""
    from stream_fer.landmarks import LandmarkerLoad
    from stream_fer.sources import source_kind

    mode = "video"
    if isinstance(source, (str, os.PathLike)):
        kind = source_kind(source)
        if not kind or (kind in ("image", "file") and not Path(source).is_file()):
            return None
        mode = "image" if kind == "image" else "video"
    elif isinstance(source, np.ndarray) and source.ndim == 3:
        mode = "image"
    return LandmarkerLoad(landmarker, mode=mode, max_faces=max_faces, min_face=min_face)


def _open_source(source: Any, fps: float | None, reconnect: int, decode_threads: bool = True) -> Source:
    """The opened Source for what analyze() was given; decode_threads=False decodes a video file in the
    calling thread (the sequential pipeline's one core)."""
    from stream_fer.sources import FileSource, open_source

    if isinstance(source, Source):
        src = source
    elif isinstance(source, (str, os.PathLike)):
        text = str(source)
        options = {"reconnect_attempts": reconnect} if text.lower().startswith("rtsp") else {}
        src = open_source(text, **options)
        if not decode_threads and type(src) is FileSource:
            src = FileSource(text, threads=False)
    elif isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        src = open_source(str(int(source)))
    elif isinstance(source, np.ndarray):
        if source.ndim == 3:
            src = _ArraySource([source], image=True)
        elif source.ndim == 4:
            src = _ArraySource(source, fps=fps or 30.0)
        else:
            raise StreamFerError(f"an array to analyze must be one (H, W, 3) image or (N, H, W, 3) frames, not "
                                 f"shape {tuple(source.shape)}")
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        src = _ArraySource(source, fps=fps or 30.0)
    else:
        raise StreamFerError(f"cannot analyze a {type(source).__name__}: give a video file, an rtsp:// URL, a "
                             f"webcam index, an image file or RGB frames")
    if src.info is None:
        src.open()
    return src


# ------------------------------------------------------------------------------------------ outputs


def _check_outputs(source: Any, outputs: dict[str, Any]) -> dict[str, Path]:
    """The requested outputs as paths, after proving each can be written and none is the input or another
    output."""
    from stream_fer.sinks import check_writable

    paths = {name: Path(p) for name, p in outputs.items() if p is not None and p != ""}
    resolved = [str(p.resolve()) for p in paths.values()]
    if len(set(resolved)) != len(resolved):
        raise StreamFerError("the outputs must be different files: " + ", ".join(f"{k}={v}" for k, v in paths.items()))
    input_path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    for p in paths.values():
        if input_path is not None and input_path.exists() and p.resolve() == input_path.resolve():
            raise StreamFerError(f"refusing to overwrite the input {input_path}")
        check_writable(p)
    return paths


def _open_sinks(paths: dict[str, Path], info: VideoInfo, rows_of, audio: bool, crf: int, preset: str) -> list:
    from stream_fer.records import ROW_FIELDS
    from stream_fer.results import ParquetSink
    from stream_fer.sinks import IMAGE_SUFFIXES, CsvSink, ImageSink, JsonlSink, VideoSink

    sinks: list = []
    try:
        if "out" in paths:
            out = paths["out"]
            if out.suffix.lower() in IMAGE_SUFFIXES:
                if info.codec != "image":
                    raise StreamFerError(f"{out} is an image name but the input is a video; use .mp4")
                sinks.append(ImageSink(out))
            else:
                sinks.append(VideoSink(out, info, copy_audio=audio, crf=crf, preset=preset))
        if "csv" in paths:
            sinks.append(CsvSink(paths["csv"], ROW_FIELDS, rows_of))
        if "jsonl" in paths:
            sinks.append(JsonlSink(paths["jsonl"], rows_of))
        if "parquet" in paths:
            sinks.append(ParquetSink(paths["parquet"], rows_of))
    except BaseException:
        _discard(sinks)
        raise
    return sinks


def _discard(sinks: list) -> None:
    """Close sinks that never received a frame and remove what they created (a run that never started
    leaves no output behind)."""
    from stream_fer.results import ParquetSink

    for sink in sinks:
        if isinstance(sink, ParquetSink):  # closing would finish and rename an empty file into place
            created = sink.part_path
        else:
            created = getattr(sink, "path", None)
            try:
                sink.close()
            except Exception as exc:
                log.debug("closing %s: %s", created, exc)
        if created is not None and Path(created).exists():
            try:
                Path(created).unlink()
            except OSError:
                pass


def run_metadata(engine, info: VideoInfo, settings: dict, model_dir=None) -> dict:
    """What a results file says about how it was made (Parquet file metadata, Results.metadata)."""
    from stream_fer import __version__
    from stream_fer.engines.pair import MirrorPair, pair_sha256

    minfo = engine.info
    model_hash = minfo.onnx_sha256 or minfo.source_checkpoint_sha256
    model = {"onnx_sha256": minfo.onnx_sha256, "source_checkpoint_sha256": minfo.source_checkpoint_sha256,
             "precision": minfo.precision, "class_names": list(minfo.class_names),
             "input_size": minfo.input_size, "engine": getattr(engine, "name", ""),
             "dir": str(model_dir) if model_dir else "default"}
    if isinstance(engine, MirrorPair):  # the mirror images read by a second network
        mirror = engine.mirror.info
        model["mirror"] = {"onnx_sha256": mirror.onnx_sha256,
                           "source_checkpoint_sha256": mirror.source_checkpoint_sha256, "dir": str(engine.mirror_dir)}
        model_hash = pair_sha256(model_hash, mirror.onnx_sha256 or mirror.source_checkpoint_sha256)
    return {
        "stream_fer_version": __version__,
        "model_sha256": model_hash,
        "model": model,
        "settings": settings,
        "source": {"description": info.description, "width": info.width, "height": info.height,
                   "fps": info.fps, "frame_count": info.frame_count, "codec": info.codec, "live": info.live},
        "fps": info.fps,
    }


# ------------------------------------------------------------------------------------------ one run


class AnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped analyze(): raised after every output was closed (each complete up to the last frame
    analysed, the report written from those frames). `results` holds what was analysed."""

    def __init__(self, results: Results) -> None:
        super().__init__("interrupted")
        self.results = results


class _Run:
    """One analysis of one source: the pipeline over a FrameAnalyzer, writing to the sinks, keeping the rows
    (finite sources) and the key frames (for a report)."""

    def __init__(self, source: Source, analyzer, sinks: list, rows_of, *, render: bool, max_frames: int | None,
                 progress: bool, keep_rows: bool, report: Path | None, metadata: dict,
                 pipeline: str = "threaded", lender: Analyzer | None = None) -> None:
        from stream_fer.records import ROW_FIELDS
        from stream_fer.results import RowCollector

        self.source = source
        self.analyzer = analyzer
        self.sinks = sinks
        self.rows_of = rows_of
        self.render = render
        self.max_frames = max_frames
        self.progress = progress
        self.collector = RowCollector(ROW_FIELDS) if keep_rows or report else None
        self.report = report
        self.keyframes = None
        if report is not None:
            from stream_fer.report import KeyFrames

            self.keyframes = KeyFrames(crop_size=analyzer.crop_size)
        self.metadata = metadata
        self.pipeline = pipeline
        self.lender = lender  # the Analyzer that lent `analyzer` (it stays open) or None (closed at the end)
        self.state = "ready"  # -> running -> done | failed; or closed without running
        self.stats: PipelineStats | None = None
        self.deliver: Callable[[FrameResult], None] | None = None

    def _on_frame(self, frame: Frame, result: FrameResult) -> None:
        if self.collector is not None:
            self.collector.add(self.rows_of(result))
        if self.keyframes is not None:
            self.keyframes.offer(frame, result)
        if self.deliver is not None:
            self.deliver(result)

    def execute(self) -> PipelineStats:
        """Run the source to its end (or max_frames, or Ctrl-C) in this thread; closes the source, the
        sinks and the analyzer's landmarker."""
        from stream_fer.pipeline import run_pipeline

        self.state = "running"
        try:
            stats = run_pipeline(self.source, self.analyzer, self.sinks, progress=self.progress,
                                 max_frames=self.max_frames, on_frame=self._on_frame, render=self.render,
                                 pipeline=self.pipeline)
        except BaseException:
            self.state = "failed"
            raise
        finally:
            self._release_analyzer()
        self.stats = stats
        self.state = "done"
        return stats

    def close(self) -> None:
        """Release a run that never started."""
        if self.state == "ready":
            self.state = "closed"
            _discard(self.sinks)
            try:
                self.source.close()
            finally:
                self._release_analyzer()

    def _release_analyzer(self) -> None:
        if self.lender is None:
            self.analyzer.close()
        else:
            self.lender._end_run()


class Results:
    """The results of analyze(): iterate it for one FrameResult per frame (lazily, while the analysis runs),
    or, for a finite source, ask for the table: to_pandas(), summary(), plot_timeline(), stats.

    A Results is read once: iterating it runs the analysis; asking for a table first runs it to the end.
    `metadata` says how it was made (version, model hash, settings, source); `outputs` names the files
    written."""

    def __init__(self, run: _Run, outputs: dict[str, Path]) -> None:
        self._run = run
        self.outputs = dict(outputs)
        self.metadata: dict = run.metadata
        self.info: VideoInfo = run.source.info
        self.class_names: tuple[str, ...] = tuple(run.analyzer.class_names)
        self._frame: pd.DataFrame | None = None

    @property
    def source(self) -> str:
        return self.info.description

    @property
    def done(self) -> bool:
        return self._run.state == "done"

    @property
    def interrupted(self) -> bool:
        return bool(self._run.stats and self._run.stats.interrupted)

    def __repr__(self) -> str:
        frames = f", {self._run.stats.frames_out} frames" if self._run.stats else ""
        return f"<stream_fer.Results {self.source!r}: {self._run.state}{frames}>"

    # --- running ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[FrameResult]:
        run = self._run
        if run.state != "ready":
            raise StreamFerError("these results were already read to the end (a run with outputs finishes "
                                 "inside analyze()); use to_pandas(), or analyze() again without outputs to "
                                 "iterate frame by frame")
        handoff: queue.Queue = queue.Queue(maxsize=4)
        gone = threading.Event()

        def put(item) -> None:
            while not gone.is_set():
                try:
                    handoff.put(item, timeout=_POLL)
                    return
                except queue.Full:
                    continue

        outcome: dict[str, BaseException] = {}

        def work() -> None:
            try:
                self._finish_run()
            except BaseException as exc:  # handed to the consumer's thread, never printed here
                outcome["error"] = exc
            finally:
                put(_END)

        run.deliver = put
        run.state = "running"
        worker = threading.Thread(target=work, name="stream-fer-analyze", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    item = handoff.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                yield item
        finally:  # the loop ended, broke early or raised (Ctrl-C): stop reading, let the frames in flight finish
            gone.set()
            run.source.stop()
            worker.join()
            run.deliver = None
        if "error" in outcome:
            raise outcome["error"]

    def _finish_run(self) -> None:
        self._run.execute()
        if self._run.report is not None:
            self.write_report(self._run.report)

    def finish(self) -> Results:
        """Analyse what is left (writing the outputs) and return self. A live source without max_frames runs
        until it ends or Ctrl-C."""
        if self._run.state == "ready":
            for _ in self:
                pass
        elif self._run.state == "running":
            raise StreamFerError("the analysis is still running: finish iterating over the results first")
        elif self._run.state == "closed":
            raise StreamFerError("these results were closed before the analysis ran")
        return self

    def close(self) -> None:
        """Release the source and the models of a run that was never started (a started run releases them
        when it ends)."""
        self._run.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the data -----------------------------------------------------------------------------------

    @property
    def stats(self) -> PipelineStats:
        """Frames, faces, speed and per-stage latency of the run (runs it to the end first)."""
        self.finish()
        return self._run.stats

    def to_pandas(self) -> pd.DataFrame:
        """One row per face per frame (a frame without faces: one row with the face columns empty), the
        columns of the CSV with the dtypes of stream_fer.results; `df.attrs["stream_fer"]` is `metadata`."""
        if self._frame is None:
            if self._run.collector is None:
                raise StreamFerError("the rows of this run were not kept (a live source without max_frames, or "
                                     "keep_rows=False): write them with csv=/parquet= and read them back with "
                                     "stream_fer.read_results")
            self.finish()
            from stream_fer.results import table_to_pandas

            self._frame = table_to_pandas(self._run.collector.table())
            self._frame.attrs["stream_fer"] = self.metadata
        return self._frame.copy()

    def summary(self) -> pd.DataFrame:
        """Per track: time tracked, share of time per smoothed expression, mean confidence, label switches per
        minute and the trust signal (stream_fer.summary)."""
        from stream_fer.summary import summarize

        return summarize(self.to_pandas(), fps=self.info.fps)

    def plot_timeline(self, track: int | None = None, ax=None):
        """A matplotlib figure of the smoothed probabilities over time (one track: `track`, default the
        longest), with low-trust stretches shaded. Needs the `report` extra (matplotlib)."""
        from stream_fer.report import plot_timeline

        return plot_timeline(self.to_pandas(), track=track, ax=ax)

    def write_report(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """The self-contained HTML report of this run (key frames included when analyze() was asked for a
        report, since only then were they kept)."""
        from stream_fer.report import write_report

        self.finish() if self._run.state != "running" else None
        keyframes = self._run.keyframes
        why = None if keyframes is not None else "No key frames: they are kept while the video is analysed " \
            "only when analyze() is given report=."
        return write_report(path, self.to_pandas(), metadata=self.metadata, keyframes=keyframes,
                            title=title or self.source, class_names=self.class_names, why_no_keyframes=why)


# ------------------------------------------------------------------------------------------ analyze


def analyze(source, *, out: str | os.PathLike | None = None, csv: str | os.PathLike | None = None,
            jsonl: str | os.PathLike | None = None, parquet: str | os.PathLike | None = None,
            report: str | os.PathLike | None = None, max_faces: int = 1, smoothing: str = "ema",
            smoothing_strength: float = 0.6, backend: str = "auto", model: str | os.PathLike | None = None,
            threads: int = 1, landmarker: str | os.PathLike | None = None,
            overlays: OverlayOptions | Mapping[str, bool] | Iterable[str] | None = None,
            max_frames: int | None = None, audio: bool = True, progress: bool = False, engine=None,
            fps: float | None = None, reconnect: int = 5, crf: int = 23, preset: str = DEFAULT_PRESET,
            announce: Callable[[str], None] | None = None, min_face: float = DEFAULT_MIN_FACE,
            keep_rows: bool | None = None, pipeline: str = "threaded", analyzer: Analyzer | None = None,
            mirror: bool = True, mirror_below: float = MIRROR_BELOW) -> Results:
    """Analyse a video file, an rtsp:// URL, a webcam index (0, 1, ...), an image file, or RGB frames (an
    iterable of (H, W, 3) uint8 arrays, stamped at `fps`, default 30).

    Outputs (each optional): `out` an annotated video (.mp4, .mov, .mkv; an image name for an image input),
    `csv` / `jsonl` / `parquet` the per-face, per-frame rows, `report` a self-contained HTML report. With
    any output the whole source is analysed before this returns (a live source: until it ends, Ctrl-C or
    max_frames); Ctrl-C closes every output (complete up to there) and raises AnalysisInterrupted, a
    KeyboardInterrupt. Without outputs this returns at once: iterate the Results for FrameResults as they
    are analysed, or call to_pandas() / summary() to analyse it all.

    Analysis: `max_faces` per frame; `smoothing` ("none", "ema", "window", "one_euro") with
    `smoothing_strength` in [0, 1]; `backend` ("auto", "onnxruntime", "tensorrt", "torch", ...), `model`
    an exported model folder (default: the shipped model), `threads` for CPU inference, `landmarker` a
    face_landmarker.task; `engine` an already loaded engine to share (then backend/model/threads are not
    used); `min_face` the smallest face height in px to look for (default 40; faces smaller than about a
    sixth of the frame are found by a tiled search, which costs nothing while max_faces faces are in view;
    0: the whole-frame detector only, see stream_fer.discovery); `mirror` (default True) reads a face's mirror
    image too and averages the two readings where the crop alone gives the top label a probability below
    `mirror_below` (default 0.7: on FER+ validation every label is then the one reading every mirror gives, for
    about a third of the engine's second passes; 1: every face); False reads the crop alone: the model's work
    per face halved (benchmarks/RESULTS.md), lower accuracy (the model card: "each face is read with its mirror
    image") and a trust score without its mirror evidence. Video: `overlays` (see overlay_options),
    `max_frames`, `audio` (copy the input's), `crf` and `preset` (x264), `reconnect` (RTSP attempts).
    `keep_rows` keeps the rows in memory for to_pandas() (default: for finite sources, and live ones with
    max_frames; False saves the memory when only the files are wanted). `progress` shows a progress bar;
    `announce(line)` is called with the start-up lines (backend chosen, input -> outputs).

    `pipeline`: "threaded" (the default: the stages overlap on the cores, one video as fast as it goes) or
    "sequential" (every step in one thread, the video file decoded in it too: one core per video, for
    running several analyses side by side). `analyzer`: an open Analyzer to analyse with (its models and
    settings; then max_faces, smoothing, smoothing_strength, min_face, overlays, backend, model, threads,
    landmarker, engine, mirror and mirror_below are not used). It is reset before the run (a fresh stream: results
    as from a new Analyzer) and left open afterwards, so one Analyzer serves many videos in turn with its models
    loaded once.

    Raises StreamFerError (one line a user can act on) for bad input, before any heavy work where it can.
    """
    from stream_fer.pipeline import check_pipeline

    check_pipeline(pipeline)
    if analyzer is not None:
        if not isinstance(analyzer, Analyzer):
            raise StreamFerError(f"analyzer must be a stream_fer.Analyzer, not {type(analyzer).__name__}")
        analyzer._check_lendable()
        (max_faces, smoothing, smoothing_strength, min_face, backend, threads, landmarker, overlays, mirror,
         mirror_below) = (analyzer._settings[k] for k in ("max_faces", "smoothing", "smoothing_strength", "min_face",
                                                          "backend", "threads", "landmarker", "overlays", "mirror",
                                                          "mirror_below"))
    _check_analysis_options(max_faces, threads, smoothing, smoothing_strength, max_frames)
    _check_min_face(min_face)
    mirror_below = check_mirror_below(mirror_below)
    paths = _check_outputs(source, {"out": out, "csv": csv, "jsonl": jsonl, "parquet": parquet,
                                    "report": report})
    if "report" in paths:
        from stream_fer.report import require_matplotlib

        if paths["report"].suffix.lower() not in (".html", ".htm"):
            raise StreamFerError(f"the report is an HTML file: name it .html, not {paths['report'].name}")
        require_matplotlib()
    # MediaPipe builds its graphs while the input opens and the engine loads: start-up overlaps
    early = _early_landmarker(source, landmarker, max_faces, min_face) if analyzer is None else None
    try:
        options = overlay_options(overlays)
        src = _open_source(source, fps, reconnect, decode_threads=pipeline != "sequential")
    except BaseException:
        if early is not None:
            early.abandon()
        raise
    info = src.info
    from stream_fer.records import to_row
    from stream_fer.results import ParquetSink, RowsMemo

    rows_of = RowsMemo(to_row)
    sinks: list = []
    mode = "image" if info.codec == "image" else "video"
    try:
        sinks = _open_sinks({k: v for k, v in paths.items() if k != "report"}, info, rows_of, audio, crf, preset)
        if analyzer is not None:
            frame_analyzer = analyzer._begin_run(mode)
            loaded = frame_analyzer.engine
        else:
            from stream_fer.analyzer import FrameAnalyzer

            # a loader: the engine loads while the analyzer builds its landmarker in a thread
            load = lambda: _load_engine(engine, model, backend, threads, announce, bool(mirror))  # noqa: E731
            frame_analyzer = FrameAnalyzer(load, landmarker_path=landmarker, max_faces=max_faces,
                                           smoothing=smoothing, smoothing_strength=smoothing_strength,
                                           overlays=options, mode=mode, min_face=min_face, landmarker_load=early,
                                           mirror=bool(mirror), mirror_below=mirror_below)
            early = None  # the analyzer owns it now
            loaded = frame_analyzer.engine
    except BaseException:
        if early is not None:
            early.abandon()
        _discard(sinks)
        src.close()
        raise
    settings = {"max_faces": max_faces, "min_face": min_face, "smoothing": smoothing,
                "smoothing_strength": smoothing_strength, "backend": backend, "threads": threads,
                "mirror": bool(mirror), "mirror_below": mirror_below, "max_frames": max_frames,
                "overlays": dataclasses.asdict(options), "landmarker": str(landmarker) if landmarker else "default"}
    metadata = run_metadata(loaded, info, settings, model)
    for sink in sinks:
        if isinstance(sink, ParquetSink):
            sink.metadata = metadata
    run = _Run(src, frame_analyzer, sinks, rows_of, render="out" in paths, max_frames=max_frames, progress=progress,
               keep_rows=(not info.live or max_frames is not None) if keep_rows is None else keep_rows,
               report=paths.get("report"), metadata=metadata, pipeline=pipeline, lender=analyzer)
    results = Results(run, paths)
    if not paths:
        return results
    if announce is not None:
        announce(f"{info.description} -> {', '.join(str(p) for p in paths.values())}")
    results._finish_run()
    if results.interrupted:
        raise AnalysisInterrupted(results)
    return results


# ------------------------------------------------------------------------------------------ Analyzer


class Analyzer:
    """The per-frame analysis for your own frame loop (a robot, an OpenCV app): an RGB frame in, its
    FrameResult (and, if asked, the annotated frame) out. Stateful across frames: face tracks and their
    smoothing carry over, so feed the frames of one stream in order; reset() starts a new stream.

        with stream_fer.Analyzer(max_faces=2) as a:
            for rgb in frames:
                result = a.process(rgb)                        # FrameResult
                result, annotated = a.process(rgb, annotate=True)

    `mode`: "video" (consecutive frames; MediaPipe tracks faces between them) or "image" (independent
    pictures). Other options as for analyze(). For the least CPU in a loop of your own, start Python with
    OPENBLAS_NUM_THREADS=1 (as the stream-fer program does): numpy's BLAS workers otherwise spin after the small
    matrix products of each face."""

    def __init__(self, *, max_faces: int = 1, smoothing: str = "ema", smoothing_strength: float = 0.6,
                 backend: str = "auto", model: str | os.PathLike | None = None, threads: int = 1,
                 mode: str = "video", overlays: OverlayOptions | Mapping[str, bool] | Iterable[str] | None = None,
                 engine=None, landmarker: str | os.PathLike | None = None,
                 min_face: float = DEFAULT_MIN_FACE, mirror: bool = True,
                 mirror_below: float = MIRROR_BELOW) -> None:
        if mode not in ("video", "image"):
            raise StreamFerError(f"mode must be 'video' or 'image', not {mode!r}")
        _check_analysis_options(max_faces, threads, smoothing, smoothing_strength)
        _check_min_face(min_face)
        mirror_below = check_mirror_below(mirror_below)
        options = overlay_options(overlays)
        from stream_fer.analyzer import FrameAnalyzer

        # a loader: the engine loads while the analyzer builds its landmarker in a thread
        self._analyzer = FrameAnalyzer(lambda: _load_engine(engine, model, backend, threads, None, bool(mirror)),
                                       landmarker_path=landmarker, max_faces=max_faces,
                                       smoothing=smoothing, smoothing_strength=smoothing_strength,
                                       overlays=options, mode=mode, min_face=min_face, mirror=bool(mirror),
                                       mirror_below=mirror_below)
        self.mode = mode
        # what analyze(analyzer=self) analyses with (and records in the results' metadata)
        self._settings = {"max_faces": max_faces, "smoothing": smoothing, "smoothing_strength": smoothing_strength,
                          "min_face": min_face, "backend": backend, "threads": threads, "landmarker": landmarker,
                          "overlays": options, "mirror": bool(mirror), "mirror_below": mirror_below}
        self._index = 0
        self._last_ms: int | None = None
        self._clock0: float | None = None
        self._closed = False
        self._used = False  # frames went through since the last reset (a lent run resets first)
        self._lent = False  # an analyze() run is using it

    @property
    def engine(self):
        """The loaded engine (pass it as `engine=` to share it with other analyzers)."""
        return self._analyzer.engine

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._analyzer.class_names

    @property
    def crop_size(self) -> int:
        """The side of the aligned face crop the model sees (what FaceResult.align_matrix maps into)."""
        return int(self._analyzer.crop_size)

    def _timestamp(self, timestamp: float | None) -> float:
        if timestamp is None:  # a live loop: seconds since the first frame, on the monotonic clock
            now = time.monotonic()
            if self._clock0 is None:
                self._clock0 = now
            timestamp = now - self._clock0
            if self._last_ms is not None and int(round(timestamp * 1000.0)) <= self._last_ms:
                timestamp = (self._last_ms + 1) / 1000.0
        timestamp = float(timestamp)
        ms = int(round(timestamp * 1000.0))
        if self.mode == "video" and self._last_ms is not None and ms <= self._last_ms:
            raise StreamFerError(f"frame timestamps must increase (by at least a millisecond): {timestamp:.3f} s "
                                 f"came after {self._last_ms / 1000.0:.3f} s; call reset() for a new stream")
        self._last_ms = ms
        return timestamp

    def process(self, rgb: np.ndarray, timestamp: float | None = None, *, annotate: bool = False):
        """Analyse one RGB uint8 frame (H, W, 3). `timestamp`: its time in seconds (default: the time since
        the first frame). Returns its FrameResult, or (FrameResult, annotated RGB frame) with annotate=True."""
        if self._closed:
            raise StreamFerError("this Analyzer is closed")
        if self._lent:
            raise StreamFerError("this Analyzer is in use by an analyze() run")
        self._used = True
        frame = Frame(index=self._index, timestamp=self._timestamp(timestamp), capture_time=time.monotonic(),
                      rgb=_as_rgb(rgb))
        self._index += 1
        a = self._analyzer
        result = a.track(a.classify(a.detect(frame)))
        if annotate:
            annotated, result = a.render_timed(frame, result)
            return result, annotated
        return result

    def reset(self) -> None:
        """Start a new stream: forget tracks and smoothing, restart the frame count and clock."""
        self._analyzer.reset()
        self._index = 0
        self._last_ms = None
        self._clock0 = None
        self._used = False

    def _check_lendable(self) -> None:
        if self._closed:
            raise StreamFerError("this Analyzer is closed")
        if self._lent:
            raise StreamFerError("this Analyzer is in use by another analyze() run; give each run its own")

    def _begin_run(self, mode: str):
        """The FrameAnalyzer for one analyze() run, reset to a fresh stream (kept until _end_run)."""
        self._check_lendable()
        if mode != self.mode:
            raise StreamFerError(f"this Analyzer is in {self.mode} mode; "
                                 + ("an image" if mode == "image" else "a video") + f" needs Analyzer(mode={mode!r})")
        if self._used:
            self.reset()
        self._used = self._lent = True
        return self._analyzer

    def _end_run(self) -> None:
        self._lent = False

    def close(self) -> None:
        if not self._closed:
            if self._lent:
                raise StreamFerError("this Analyzer is in use by an analyze() run; close it after the run")
            self._closed = True
            self._analyzer.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
