"""The threaded frame pipeline: source -> detect -> classify -> track -> render -> sinks, one thread per
stage, bounded queues between them.

- Files never drop a frame: a full queue makes the stage before it wait; frames leave in order and the
  pipeline checks that every frame read was written.
- Live sources drop in their own reader (they keep only the newest frames); the queues here are kept short
  (one frame) so latency stays bounded.
- The end of the stream is a sentinel that flows through every stage.
- The first exception in any stage wins: every thread stops and the exception is re-raised in the caller's
  thread (no thread ever prints a traceback). An error *of the source* (a file that turns out truncated
  half-way) first lets the frames already read finish, so the outputs hold them.
- Ctrl-C (KeyboardInterrupt in the caller's thread) stops the source and drains what is in flight; the
  outputs are closed either way; a second Ctrl-C abandons the frames in flight.
- Per stage: latency (median, p95) and throughput; overall: fps, end-to-end latency from capture to
  rendered, frames dropped by a live source.

`run_stages` is the generic runner (stages are plain functions; the tests drive it with trivial ones);
`run_sequential` keeps the same contract in the caller's thread alone, one frame at a time (one core per
video: what batch workers use, since they run one video per core); `run_pipeline` runs a FrameAnalyzer's
stages with either (pipeline="threaded", the default, or "sequential").
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_fer.frames import Frame, FrameResult
from stream_fer.sources import Source

log = logging.getLogger(__name__)

_END = object()  # the end-of-stream sentinel
_POLL = 0.1  # seconds between checks of the abort flag while waiting on a queue


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: fn(frame, previous stage's output) -> this stage's output."""

    name: str
    fn: Callable[[Frame, Any], Any]


@dataclass
class _Work:
    frame: Frame
    value: Any = None


@dataclass(frozen=True)
class StageStats:
    name: str
    frames: int
    busy_s: float  # time spent inside the stage's function
    median_ms: float
    p95_ms: float
    max_ms: float
    cpu_s: float = 0.0  # CPU time of the stage's thread inside the function (time.thread_time): what it costs

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per frame this stage's own thread spent (native work in other threads, such as
        MediaPipe's or x264's workers, is not included)."""
        return self.cpu_s / self.frames * 1000.0 if self.frames else 0.0

    @property
    def capacity_fps(self) -> float:
        """The rate this stage alone could sustain."""
        return self.frames / self.busy_s if self.busy_s > 0 else float("inf")


@dataclass(frozen=True)
class PipelineStats:
    frames_in: int  # frames read from the source
    frames_out: int  # frames written to every sink
    faces: int  # faces over all frames written
    frames_with_faces: int
    dropped: int  # frames a live source discarded to bound latency
    wall_s: float  # first frame read -> last frame written
    stages: tuple[StageStats, ...]
    latency_median_ms: float | None  # capture -> rendered
    latency_p95_ms: float | None
    interrupted: bool = False
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def summary_lines(self) -> list[str]:
        lines = [f"{self.frames_out} frames" + (f" of {self.frames_in} read" if self.frames_in != self.frames_out
                                                 else "")
                 + f", {self.faces} faces in {self.frames_with_faces} frames, {self.wall_s:.1f} s, "
                   f"{self.fps:.1f} fps" + (" (interrupted)" if self.interrupted else "")]
        if self.dropped:
            lines.append(f"dropped {self.dropped} frames to keep up with the live source")
        if self.latency_median_ms is not None:
            lines.append(f"capture -> rendered latency: median {self.latency_median_ms:.0f} ms, "
                         f"p95 {self.latency_p95_ms:.0f} ms")
        width = max((len(s.name) for s in self.stages), default=5)
        for s in self.stages:
            lines.append(f"  {s.name:<{width}}  median {s.median_ms:6.1f} ms  p95 {s.p95_ms:6.1f} ms  "
                         f"cpu {s.cpu_ms:5.1f} ms  ({s.capacity_fps:6.1f} fps alone)")
        return lines


class _Stopwatch:
    """Per-stage latencies, in milliseconds, and the stage thread's CPU time."""

    def __init__(self) -> None:
        self.ms = array("d")
        self.busy = 0.0
        self.cpu = 0.0

    def add(self, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.ms.append(seconds * 1000.0)
        self.busy += seconds
        self.cpu += cpu_seconds

    def stats(self, name: str) -> StageStats:
        if not self.ms:
            return StageStats(name, 0, 0.0, 0.0, 0.0, 0.0)
        a = np.frombuffer(self.ms, dtype=np.float64)
        median, p95 = _quantiles(a, (0.5, 0.95))
        return StageStats(name, len(a), self.busy, median, p95, float(a.max()), self.cpu)


def _quantiles(a: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles with linear interpolation (numpy's default method), without np.median/np.percentile,
    whose NaN check imports numpy.ma (tens of ms of CPU at the end of every run)."""
    s = np.sort(a)
    return [float(np.interp(q * (len(s) - 1), np.arange(len(s)), s)) for q in qs]


class _Tally:
    """What both runners measure and check for one run: per-stage stopwatches, the source's reads, the
    sinks' writes, capture -> written latencies, frame and face counts; `deliver` writes one frame's output
    to the sinks (in order for files), `stats` makes the run's PipelineStats."""

    def __init__(self, stages: Sequence[Stage], sinks: Sequence, live: bool,
                 on_frame: Callable[[Frame, Any], None] | None, count_faces: Callable[[Any], int] | None) -> None:
        self.watches = {s.name: _Stopwatch() for s in stages}
        self.read_watch = _Stopwatch()  # the source's decode (and, for live sources, waiting for a frame)
        self.write_watch = _Stopwatch()
        self.e2e = array("d")
        self.counts = {"in": 0, "out": 0, "faces": 0, "with_faces": 0}
        self.first: float | None = None
        self.last: float | None = None
        self._stages, self._sinks, self._live = stages, sinks, live
        self._on_frame, self._count_faces = on_frame, count_faces
        self._last_index = -1

    def frame_in(self) -> None:
        if self.first is None:
            self.first = time.monotonic()
        self.counts["in"] += 1

    def deliver(self, frame: Frame, value) -> None:
        result, annotated = value if isinstance(value, tuple) and len(value) == 2 else (value, None)
        self.e2e.append((time.monotonic() - frame.capture_time) * 1000.0)
        if not self._live and frame.index <= self._last_index:
            raise RuntimeError(f"frame {frame.index} left the pipeline after frame {self._last_index}")
        self._last_index = frame.index
        t0, c0 = time.perf_counter(), time.thread_time()
        for sink in self._sinks:
            sink.write(frame, result, annotated)
        self.write_watch.add(time.perf_counter() - t0, time.thread_time() - c0)
        self.counts["out"] += 1
        n = self._count_faces(result) if self._count_faces else len(getattr(result, "faces", ()) or ())
        self.counts["faces"] += n
        self.counts["with_faces"] += n > 0
        self.last = time.monotonic()
        if self._on_frame is not None:
            self._on_frame(frame, result)

    def check_complete(self) -> None:
        """A file's every frame read was written (live sources drop by design)."""
        if not self._live and self.counts["out"] != self.counts["in"]:
            raise RuntimeError(f"the pipeline lost frames: read {self.counts['in']}, wrote {self.counts['out']}")

    def stats(self, source: Source, interrupted: bool) -> PipelineStats:
        counts = self.counts
        lat = np.frombuffer(self.e2e, dtype=np.float64) if len(self.e2e) else None
        info = getattr(source, "info", None)
        return PipelineStats(
            frames_in=counts["in"], frames_out=counts["out"], faces=counts["faces"],
            frames_with_faces=counts["with_faces"], dropped=int(getattr(source, "dropped", 0) or 0),
            wall_s=(self.last - self.first) if self.first is not None and self.last is not None else 0.0,
            stages=tuple(self.watches[s.name].stats(s.name) for s in self._stages)
            + (self.write_watch.stats("write"),),
            latency_median_ms=None if lat is None else _quantiles(lat, (0.5,))[0],
            latency_p95_ms=None if lat is None else _quantiles(lat, (0.95,))[0],
            interrupted=interrupted, source=getattr(info, "description", "") if info else "",
            extra={"latencies_ms": lat, "read": self.read_watch.stats("read")},
        )


class _Run:
    """The shared state of one run: the abort flag and the first error."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self.source_error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.abort.set()

    def put(self, q: queue.Queue, item) -> bool:
        """Put, waiting while the queue is full; False if the run was aborted meanwhile."""
        while not self.abort.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        """The next item, or _END if the run was aborted."""
        while not self.abort.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return _END


def run_stages(source: Source, stages: Sequence[Stage], sinks: Sequence, *, max_frames: int | None = None,
               queue_size: int | None = None, progress: bool = False,
               on_frame: Callable[[Frame, Any], None] | None = None,
               count_faces: Callable[[Any], int] | None = None) -> PipelineStats:
    """Run frames from `source` through `stages` (each in its own thread) and write the last stage's output
    to every sink with `sink.write(frame, result, annotated)` (the last output must be a
    (result, annotated) pair; other shapes are passed as (output, None)). Takes ownership of the source
    and the sinks: they are closed when this returns or raises."""
    live = bool(getattr(source, "live", False))
    size = queue_size or (1 if live else 4)
    queues = [queue.Queue(maxsize=size) for _ in range(len(stages) + 1)]
    run = _Run()
    tally = _Tally(stages, sinks, live, on_frame, count_faces)
    counts = tally.counts
    draining = threading.Event()

    def source_loop() -> None:
        out = queues[0]
        frames = iter(source)
        try:
            while True:
                t0, c0 = time.perf_counter(), time.thread_time()
                frame = next(frames, None)
                if frame is None:
                    break
                tally.read_watch.add(time.perf_counter() - t0, time.thread_time() - c0)
                if run.abort.is_set():
                    return
                tally.frame_in()
                if not run.put(out, _Work(frame)):
                    return
                if max_frames is not None and counts["in"] >= max_frames:
                    break
                if draining.is_set():
                    break
        except BaseException as exc:  # a source error lets the frames in flight finish first
            run.source_error = exc
        finally:
            _close_quietly(source)  # in this thread: no other thread is inside the source now
        run.put(out, _END)

    def stage_loop(stage: Stage, inq: queue.Queue, outq: queue.Queue) -> None:
        watch = tally.watches[stage.name]
        try:
            while True:
                work = run.get(inq)
                if work is _END:
                    break
                t0, c0 = time.perf_counter(), time.thread_time()
                work.value = stage.fn(work.frame, work.value)
                watch.add(time.perf_counter() - t0, time.thread_time() - c0)
                if not run.put(outq, work):
                    return
        except BaseException as exc:
            run.fail(exc)
            return
        run.put(outq, _END)

    def sink_loop(inq: queue.Queue) -> None:
        try:
            while True:
                work = run.get(inq)
                if work is _END:
                    break
                tally.deliver(work.frame, work.value)
        except BaseException as exc:
            run.fail(exc)
        finally:  # in this thread, the only one that writes to the sinks: flush and finalise them
            close_errors.extend(_close_all(sinks))

    close_errors: list[BaseException] = []
    threads = [threading.Thread(target=source_loop, name="pipeline-source", daemon=True)]
    for i, stage in enumerate(stages):
        threads.append(threading.Thread(target=stage_loop, args=(stage, queues[i], queues[i + 1]),
                                        name=f"pipeline-{stage.name}", daemon=True))
    sink_thread = threading.Thread(target=sink_loop, args=(queues[-1],), name="pipeline-sinks", daemon=True)
    threads.append(sink_thread)

    interrupts = [0]

    def interrupt() -> None:
        """Ctrl-C: the first drains (the source stops, frames in flight finish), the second abandons them."""
        interrupts[0] += 1
        source.stop()
        if interrupts[0] == 1:
            log.warning("interrupted: finishing the frames in flight and closing the outputs "
                        "(Ctrl-C again to stop at once)")
            draining.set()
        else:
            run.abort.set()

    bar = _progress_bar(source, progress)
    with _sigint_calls(interrupt), _native_single_threaded():
        try:
            for t in threads:
                t.start()
            shown = 0
            while sink_thread.is_alive():
                try:
                    sink_thread.join(_POLL)
                    if bar is not None and counts["out"] != shown:
                        bar.update(counts["out"] - shown)
                        shown = counts["out"]
                    if run.abort.is_set():
                        source.stop()
                except KeyboardInterrupt:  # where no handler could be installed (not the main thread)
                    interrupt()
            if bar is not None and counts["out"] != shown:
                bar.update(counts["out"] - shown)
        except BaseException:
            run.abort.set()
            source.stop()
            raise
        finally:
            if bar is not None:
                bar.close()
            # the sink thread closes the sinks and the source thread the source; wait for both, so that
            # nothing is closed while another thread still uses it
            for t in threads:
                if t.ident is None:  # never started
                    continue
                t.join(timeout=None if t is sink_thread else 30.0 if t is threads[0] else 5.0)
                if t.is_alive():
                    log.warning("pipeline thread %s did not stop", t.name)
    interrupted = interrupts[0] > 0

    if run.error is not None:
        raise run.error
    if run.source_error is not None and not interrupted:
        raise run.source_error
    if close_errors:
        raise close_errors[0]
    if not interrupted:
        tally.check_complete()
    return tally.stats(source, interrupted)


def run_sequential(source: Source, stages: Sequence[Stage], sinks: Sequence, *, max_frames: int | None = None,
                   queue_size: int | None = None, progress: bool = False,
                   on_frame: Callable[[Frame, Any], None] | None = None,
                   count_faces: Callable[[Any], int] | None = None) -> PipelineStats:
    """run_stages' contract in the caller's thread alone: each frame is read, passed through every stage
    and written before the next is read. The same sinks, statistics (per stage, "read" in extra), order
    and completeness checks, error and Ctrl-C semantics (a source error comes after the frames read before
    it are written; the first Ctrl-C finishes the frame in hand and closes the outputs, a second abandons
    it). It uses one core: for batch workers, which run one video per core (threads would only contend
    there). `queue_size` is accepted for the same signature and unused (there are no queues)."""
    del queue_size
    tally = _Tally(stages, sinks, bool(getattr(source, "live", False)), on_frame, count_faces)
    counts = tally.counts
    error: BaseException | None = None
    source_error: BaseException | None = None
    interrupts = [0]

    def interrupt() -> None:
        interrupts[0] += 1
        source.stop()
        if interrupts[0] == 1:
            log.warning("interrupted: finishing the frame in hand and closing the outputs "
                        "(Ctrl-C again to stop at once)")

    bar = _progress_bar(source, progress)
    with _sigint_calls(interrupt), _native_single_threaded():
        try:
            frames = iter(source)
            while interrupts[0] == 0 and (max_frames is None or counts["in"] < max_frames):
                try:
                    t0, c0 = time.perf_counter(), time.thread_time()
                    frame = next(frames, None)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # like run_stages: the frames read before it are written
                    source_error = exc
                    break
                if frame is None:
                    break
                tally.read_watch.add(time.perf_counter() - t0, time.thread_time() - c0)
                tally.frame_in()
                value = None
                for stage in stages:
                    t0, c0 = time.perf_counter(), time.thread_time()
                    value = stage.fn(frame, value)
                    tally.watches[stage.name].add(time.perf_counter() - t0, time.thread_time() - c0)
                if interrupts[0] > 1:  # the second Ctrl-C came during this frame: abandon it
                    break
                tally.deliver(frame, value)
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:  # where no handler could be installed: the frame in hand is abandoned
            interrupts[0] += 2
        except BaseException as exc:
            error = exc
        finally:
            if bar is not None:
                bar.close()
            _close_quietly(source)
            close_errors = _close_all(sinks)
    interrupted = interrupts[0] > 0

    if error is not None:
        raise error
    if source_error is not None and not interrupted:
        raise source_error
    if close_errors:
        raise close_errors[0]
    if interrupts[0] <= 1:  # a second Ctrl-C abandoned the frame in hand
        tally.check_complete()
    return tally.stats(source, interrupted)


# How run_pipeline runs the stages: "threaded" overlaps them on the cores (the default: one video as fast as
# it goes); "sequential" keeps one video on one core (many videos side by side: batch workers).
RUNNERS: dict[str, Callable[..., PipelineStats]] = {"threaded": run_stages, "sequential": run_sequential}


def check_pipeline(name: str) -> Callable[..., PipelineStats]:
    """The runner called `name`, or one StreamFerError naming the choices."""
    try:
        return RUNNERS[name]
    except (KeyError, TypeError):
        from stream_fer.errors import StreamFerError

        raise StreamFerError(f"pipeline must be one of {', '.join(map(repr, RUNNERS))}, not {name!r}") from None


@contextlib.contextmanager
def _native_single_threaded():
    """While the pipeline runs, OpenCV and numpy's BLAS work in the calling stage's thread: the stages already
    keep the cores busy, and the libraries' own worker pools would only add wake-ups and hand-offs (CPU, not
    speed). OpenBLAS's workers spin after every small matrix product (the AU maps' blur, the attention shares):
    about 0.5 ms of CPU per frame of a data-only run (benchmarks/RESULTS.md, session 11)."""
    with contextlib.ExitStack() as stack:
        try:
            import cv2
        except ImportError:
            pass
        else:
            previous = cv2.getNumThreads()
            cv2.setNumThreads(0)  # 0: every OpenCV function runs sequentially in its caller
            stack.callback(cv2.setNumThreads, previous)
        stack.enter_context(single_threaded_blas())
        yield


def single_threaded_blas():
    """A context manager (threadpoolctl) limiting the BLAS libraries numpy uses to one thread, restored after;
    also callable once for the rest of the process (the app's server)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def _sigint_calls(callback: Callable[[], None]):
    """While active, SIGINT calls `callback` instead of raising KeyboardInterrupt wherever the main thread
    happens to be (which could be between two steps of the shutdown). Only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: callback())
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _close_quietly(source: Source) -> None:
    try:
        source.close()
    except Exception as exc:
        log.debug("closing the source: %s", exc)


def _close_all(sinks: Sequence) -> list[BaseException]:
    errors: list[BaseException] = []
    for sink in sinks:
        try:
            sink.close()
        except BaseException as exc:  # close every sink even if one fails
            errors.append(exc)
    return errors


def _progress_bar(source: Source, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    info = getattr(source, "info", None)
    total = None if info is None or info.live else info.frame_count
    return tqdm(total=total, unit="frame", desc="stream-fer", dynamic_ncols=True, leave=False,
                disable=None, file=sys.stderr)


def analyzer_stages(analyzer) -> list[Stage]:
    """A FrameAnalyzer's four stages as pipeline stages."""
    return [
        Stage("landmarks", lambda frame, _: analyzer.detect(frame)),
        Stage("classify", lambda frame, detected: analyzer.classify(detected)),
        Stage("track", lambda frame, classified: analyzer.track(classified)),
        Stage("render", lambda frame, result: analyzer.render_timed(frame, result)[::-1]),
    ]


def wants_annotated(sinks: Sequence) -> bool:
    """Whether any sink uses the annotated picture; a sink says it does not with `wants_annotated = False`
    (the row sinks); one that says nothing gets it."""
    return any(getattr(sink, "wants_annotated", True) for sink in sinks)


def run_pipeline(source: Source, analyzer, sinks: Sequence, progress: bool = True,
                 max_frames: int | None = None, queue_size: int | None = None,
                 on_frame: Callable[[Frame, FrameResult], None] | None = None,
                 render: bool | None = None, pipeline: str = "threaded") -> PipelineStats:
    """Analyse every frame of `source` with `analyzer` (a FrameAnalyzer) and write the annotated frames and
    the results to `sinks`. The source is opened if it is not yet; the source and sinks are closed at the
    end (the analyzer is not: it may serve another run). render=None renders only when a sink wants the
    picture (see wants_annotated); without rendering the sinks get annotated=None and every result is
    computed all the same. `pipeline`: "threaded" (run_stages) or "sequential" (run_sequential)."""
    runner = check_pipeline(pipeline)
    if getattr(source, "info", None) is None:
        source.open()
    stages = analyzer_stages(analyzer)
    if not (wants_annotated(sinks) if render is None else render):
        stages = stages[:3]  # no picture output: the render stage would draw for nobody
    return runner(source, stages, sinks, max_frames=max_frames, queue_size=queue_size,
                  progress=progress, on_frame=on_frame)
