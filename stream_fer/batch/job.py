"""The per-video job: one video through `stream_fer.analyze` (the same per-video function the library and
`stream-fer run` use) into a private staging folder, the outputs renamed into place, the done-marker last.

A job never raises for a bad video: it returns a JobResult with the one-line error and the traceback, and
leaves a failed-marker. Only KeyboardInterrupt passes through (the batch is being cancelled; the video is
left to the next run). Runs in a pool worker or a Ray worker. Each worker process loads the engine, the
MediaPipe landmarker and the rest of the analysis once (one stream_fer.Analyzer, reset between videos: the
results are those of a fresh run) and analyses one video at a time on one core (the sequential pipeline,
every library thread pool at one thread), since the batch runs one worker per core."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stream_fer.batch.layout import VideoOutputs
from stream_fer.batch.markers import Fingerprint, remove_quietly, write_marker
from stream_fer.errors import StreamFerError, first_line
from stream_fer.reading import MIRROR_BELOW

log = logging.getLogger(__name__)

# Thread pools a worker sizes to one thread: the batch's parallelism is one video per core, so a library
# that spreads one video over every core only adds contention.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "OPENCV_FOR_THREADS_NUM")


@dataclass(frozen=True)
class BatchSettings:
    """The analysis settings of a batch, the same for every video."""

    max_faces: int = 1
    min_face: float = 40  # px: the smallest face looked for (stream_fer.api.DEFAULT_MIN_FACE)
    smoothing: str = "ema"
    smoothing_strength: float = 0.6
    backend: str = "auto"
    model: str | None = None
    landmarker: str | None = None
    max_frames: int | None = None
    csv: bool = False
    jsonl: bool = False
    video: bool = False  # the annotated video
    audio: bool = True  # copied into the annotated video
    mirror: bool = True  # each face read with its mirror image (False: the crop alone, half the model's work)
    mirror_below: float = MIRROR_BELOW  # ... where the crop alone is less sure than this (1: every face)

    def fingerprint_items(self) -> dict:
        """The settings a video's outputs depend on (what goes into its fingerprint)."""
        items = asdict(self)
        items["model"] = None  # the model's hash is in the fingerprint; its folder may move
        items["landmarker"] = None  # likewise: the landmarker is verified by its sha256
        if not self.video:
            items.pop("audio")
        # Every face read with its mirror image is what every batch did before these settings existed (session 16):
        # it adds nothing to the fingerprint, so those outputs stay finished; the threshold counts only when a
        # mirror image is read at all.
        if self.mirror:
            items.pop("mirror")
            if self.mirror_below >= 1.0:
                items.pop("mirror_below")
        else:
            items.pop("mirror_below")
        return items


@dataclass(frozen=True)
class VideoJob:
    video: str  # the name (relative path) shown in the table
    input: Path
    outputs: VideoOutputs
    settings: BatchSettings
    fingerprint: Fingerprint


@dataclass(frozen=True)
class JobResult:
    video: str
    status: str  # "done" or "failed"
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0  # wall time of the analysis (engine load excluded)
    fps: float = 0.0
    cpu_seconds: float = 0.0  # user + system CPU time of the worker process during the job
    error: str = ""
    traceback: str = ""
    worker: str = ""  # host:pid
    attempts: int = 1
    leftovers: int = 0  # staging folders of earlier attempts that this one cleared (crashed or cancelled runs)
    started: float = 0.0  # wall-clock (epoch seconds) at the analysis's start and end
    finished: float = 0.0
    max_rss_mb: float = 0.0  # the worker process's peak resident memory so far (what a worker needs)
    fatal: bool = False  # the worker could not load the model or the landmarker: no video can succeed, the batch stops

    def table_fields(self) -> dict:
        return {"frames": self.frames, "faces": self.faces, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 2), "cpu_seconds": round(self.cpu_seconds, 3), "worker": self.worker,
                "started": _utc(self.started), "finished": _utc(self.finished),
                "max_rss_mb": round(self.max_rss_mb, 1)}


# ---------------------------------------------------------------------------------------- the worker

_ENGINES: dict[tuple, object] = {}
_ANALYZERS: dict[tuple, object] = {}


def limit_threads() -> None:
    """One thread per library thread pool in this process (call before the libraries start their pools)."""
    for name in THREAD_ENV:
        os.environ[name] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - mediapipe always brings OpenCV
        pass


def worker_engine(settings: BatchSettings):
    """This process's engine for `settings`, loaded on first use and kept (one per worker process)."""
    key = (settings.model, settings.backend)
    if key not in _ENGINES:
        from stream_fer.engines.select import load_engine

        _ENGINES[key] = load_engine(settings.model, backend=settings.backend, threads=1)
    return _ENGINES[key]


def worker_analyzer(settings: BatchSettings):
    """This process's stream_fer.Analyzer for `settings` (on the worker's engine), made on first use and kept:
    analyze(analyzer=...) resets it before each video, so the landmarker, the trust model and the rest load
    once per worker instead of once per video."""
    key = (settings.model, settings.backend, settings.landmarker, settings.max_faces, settings.min_face,
           settings.smoothing, settings.smoothing_strength, settings.mirror, settings.mirror_below)
    if key not in _ANALYZERS:
        import stream_fer

        # the overlays are the defaults, as analyze() draws them for --video; threads=1 is the engine's
        _ANALYZERS[key] = stream_fer.Analyzer(
            max_faces=settings.max_faces, smoothing=settings.smoothing, smoothing_strength=settings.smoothing_strength,
            backend=settings.backend, threads=1, engine=worker_engine(settings), landmarker=settings.landmarker,
            min_face=settings.min_face, mirror=settings.mirror, mirror_below=settings.mirror_below)
    return _ANALYZERS[key]


def warm_up(settings: BatchSettings) -> None:
    """Import the analysis and load the engine ahead of the first video; a failure is left for the first job
    to report."""
    try:
        import pandas  # noqa: F401 - import time (MediaPipe, OpenCV, pandas) is not a video's time

        import stream_fer.analyzer  # noqa: F401
        import stream_fer.api  # noqa: F401
        import stream_fer.results  # noqa: F401

        worker_engine(settings)
        worker_analyzer(settings)
    except Exception as exc:  # noqa: BLE001 - reported per video by run_job
        log.debug("engine warm-up failed: %s", exc)


def error_line(exc: BaseException) -> str:
    """A user's error as it is; anything else with its type, so a bug is recognisable in the table."""
    line = first_line(exc)
    return line if isinstance(exc, StreamFerError) else f"{type(exc).__name__}: {line}"


def _utc(epoch: float) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_job(job: VideoJob) -> JobResult:
    """Analyse one video; see the module docstring. Safe to run again after any crash: stale staging
    folders are removed and the old markers go before any new output lands."""
    outputs = job.outputs
    worker = f"{socket.gethostname()}:{os.getpid()}"
    # The same for every video, so not this video's failure: the batch stops (a landmarker file that is not
    # MediaPipe's fails the analysis's start).
    for load, what in ((worker_engine, "load the model"), (worker_analyzer, "start the analysis")):
        try:
            load(job.settings)
        except Exception as exc:  # noqa: BLE001
            return JobResult(job.video, "failed", error=f"cannot {what}: {error_line(exc)}",
                             traceback=traceback.format_exc(), worker=worker, fatal=True)
    leftovers, staging = 0, None
    try:
        outputs.folder.mkdir(parents=True, exist_ok=True)
        for path in (outputs.done, outputs.failed):
            remove_quietly(path)
        for stale in outputs.folder.glob(outputs.staging_glob):
            shutil.rmtree(stale, ignore_errors=True)
            leftovers += 1
        staging = Path(tempfile.mkdtemp(prefix=f".{outputs.base.name}.partial-", dir=outputs.folder))
        cpu0, t0, started = _cpu_seconds(), time.perf_counter(), time.time()
        staged = {kind: staging / final.name for kind, final in outputs.data_files.items()}
        frames, faces, summary = _analyze(job, staged)
        staged["summary"].write_text(json.dumps(summary, indent=1, default=str) + "\n")
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        result = JobResult(job.video, "done", frames, faces, seconds, frames / seconds if seconds > 0 else 0.0,
                           cpu, worker=worker, leftovers=leftovers, started=started, finished=time.time(),
                           max_rss_mb=_max_rss_mb())
        for kind, final in outputs.data_files.items():
            os.replace(staged[kind], final)
        write_marker(outputs.done, status="done", video=job.video, input_path=job.input,
                     fingerprint=job.fingerprint, result=result.table_fields(), outputs=outputs)
        return result
    except Exception as exc:  # noqa: BLE001 - one bad video never stops the batch
        result = JobResult(job.video, "failed", error=error_line(exc), traceback=traceback.format_exc(),
                           worker=worker, leftovers=leftovers)
        record_failure(job, result)
        return result
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def record_failure(job: VideoJob, result: JobResult) -> None:
    """The failed-marker of `job` (also written by the batch itself when a video's worker keeps dying)."""
    try:
        write_marker(job.outputs.failed, status="failed", video=job.video, input_path=job.input,
                     fingerprint=job.fingerprint, result=replace(result, traceback="").table_fields(),
                     error=result.error)
    except OSError as exc:
        log.warning("could not write %s: %s", job.outputs.failed, exc)


def _analyze(job: VideoJob, staged: dict[str, Path]) -> tuple[int, int, dict]:
    """(frames, faces, summary) of one video, its outputs written to the staged paths. The summary: the
    video's figures (frames, duration, face share, tracks), Results.summary() as records (all faces, then
    one per track) and how the results were made (version, model hash, settings, source)."""
    import stream_fer

    s = job.settings
    res = stream_fer.analyze(str(job.input), parquet=staged["parquet"], csv=staged.get("csv"),
                             jsonl=staged.get("jsonl"), out=staged.get("video"), max_frames=s.max_frames,
                             audio=s.audio, progress=False, pipeline="sequential", analyzer=worker_analyzer(s))
    stats = res.stats
    table = res.summary()
    summary = {"video": job.video, "input": str(job.input), **table.attrs.get("video", {}),
               "summary": json.loads(table.to_json(orient="records")), "metadata": res.metadata}
    return int(stats.frames_out), int(stats.faces), summary
