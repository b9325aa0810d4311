"""The local runner: a process pool on this machine, one video per worker at a time.

Workers are spawned (not forked: MediaPipe and ONNX Runtime threads do not survive a fork), ignore SIGINT
(Ctrl-C is the batch's to handle: it stops the workers and leaves their videos to the next run), size every
thread pool to one thread, and load the engine once. A worker that dies (killed, out of memory, a crash in
native code) breaks concurrent.futures' pool; the runner starts a new pool and gives the videos that were
in flight another attempt, up to `max_attempts`."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from stream_fer.batch.job import BatchSettings, JobResult, VideoJob, error_line, limit_threads, run_job, warm_up

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(settings: BatchSettings, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    warm_up(settings)
    atexit.register(_exit_now)  # registered last: runs first


def _exit_now() -> None:
    """A worker's last act once the pool lets it go: every video it ran is complete and renamed into place
    (a job returns only then), so the interpreter's teardown of MediaPipe, ONNX Runtime, pandas and the rest
    (about 0.4 s, at the end of every batch) does nothing anyone needs."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


class PoolRunner:
    """`with PoolRunner(settings, workers) as runner: for result in runner.run(jobs): ...`"""

    def __init__(self, settings: BatchSettings, workers: int | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.settings = settings
        self.workers = workers or default_workers()
        self.max_attempts = max_attempts
        self._executor: ProcessPoolExecutor | None = None
        self._exiting: list = []  # worker processes told to exit by release(), joined in __exit__

    def describe(self) -> str:
        return f"a local pool of {self.workers} worker{'s' if self.workers != 1 else ''}"

    def __enter__(self) -> PoolRunner:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop(kill=exc_type is not None)

    def release(self) -> None:
        """Every video is done: the workers start exiting (interpreter and library teardown) while the caller
        goes on; __exit__ waits for them."""
        executor, self._executor = self._executor, None
        if executor is not None:
            self._exiting = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False)

    def _start(self) -> ProcessPoolExecutor:
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(self.settings, logging.getLogger("stream_fer").getEffectiveLevel()))
        return self._executor

    def _stop(self, kill: bool) -> None:
        exiting, self._exiting = self._exiting, []
        for process in exiting:
            if kill and process.is_alive():
                process.terminate()
            process.join()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if kill:
            # concurrent.futures (before Python 3.14) cannot stop a running call: end the workers, whose
            # videos are then redone by the next run (their outputs never reached a final name).
            for process in list(getattr(executor, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs: Sequence[VideoJob]) -> Iterator[JobResult]:
        """Results as the videos finish (in any order). At most `workers` videos are handed to the pool
        at a time, so when a worker dies the videos in flight are exactly those that lose an attempt."""
        queue = deque(jobs)
        attempts = {job.video: 0 for job in jobs}
        executor = self._start()
        in_flight: dict[Future, VideoJob] = {}
        while queue or in_flight:
            while queue and len(in_flight) < self.workers:
                job = queue.popleft()
                attempts[job.video] += 1
                try:
                    in_flight[executor.submit(run_job, job)] = job
                except BrokenProcessPool:
                    queue.appendleft(job)
                    attempts[job.video] -= 1
                    break
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                job = in_flight.pop(future)
                try:
                    yield replace(future.result(), attempts=attempts[job.video])
                except BrokenProcessPool:
                    broken = True
                    in_flight[future] = job  # handled with the others below
                except Exception as exc:  # noqa: BLE001 - the call itself failed (not the video): still one row
                    yield JobResult(job.video, "failed", error=error_line(exc), attempts=attempts[job.video])
            if broken:
                lost = list(in_flight.values())
                in_flight.clear()
                log.warning("a worker process died; %d video(s) in flight get another attempt", len(lost))
                self._stop(kill=True)
                for job in reversed(lost):
                    if attempts[job.video] >= self.max_attempts:
                        yield JobResult(job.video, "failed", attempts=attempts[job.video],
                                        error=f"the worker process died {attempts[job.video]} times "
                                              "(killed, out of memory, or a crash in native code)")
                    else:
                        queue.appendleft(job)
                executor = self._start()
