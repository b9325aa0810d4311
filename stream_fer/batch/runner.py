"""A batch from start to end: plan (which videos need work: markers decide), run the jobs on the local
pool or on Ray with one progress bar over videos, and write the batch's table and combined dataset, also
after a failure or Ctrl-C, so the folder always says where the batch stands."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_fer.batch.inputs import Shard, VideoInput
from stream_fer.batch.job import BatchSettings, JobResult, VideoJob, record_failure
from stream_fer.batch.layout import DATASET_NAME, LOG_NAME, TABLE_NAME, output_bases, video_outputs
from stream_fer.batch.markers import Fingerprint, VideoState, model_sha256, video_state
from stream_fer.batch.table import append_log, write_dataset, write_table
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    out_dir: Path
    settings: BatchSettings = BatchSettings()
    workers: int | None = None  # None: one per core (pool), or what the cluster has (Ray)
    ray: bool = False
    ray_address: str | None = None  # None with ray=True: start a local Ray
    force: bool = False  # redo every video
    retry_failed: bool = False  # redo the videos that failed before
    shard: Shard | None = None
    progress: bool = True
    max_attempts: int = 3  # per video, when its worker process dies


@dataclass(frozen=True)
class BatchReport:
    videos: int  # in this batch (this shard)
    done: int  # finished, this run or before
    failed: int
    pending: int  # not finished (interrupted)
    ran: int  # videos this run worked on
    frames: int  # frames analysed by this run
    seconds: float  # wall time of this run's work
    runner: str
    table: Path
    dataset: Path
    log_path: Path
    interrupted: bool = False
    failures: tuple[tuple[str, str], ...] = field(default=())  # (video, error), this batch's failed videos

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def videos_text(n: int) -> str:
    return f"{n} video" if n == 1 else f"{n} videos"


def batch_file_names(shard: Shard | None) -> tuple[str, str]:
    """(table, dataset) file names; shards running at the same time each write their own."""
    if shard is None:
        return TABLE_NAME, DATASET_NAME
    suffix = f".shard-{shard.index}-of-{shard.count}"
    return (TABLE_NAME.replace(".csv", f"{suffix}.csv"), DATASET_NAME.replace(".parquet", f"{suffix}.parquet"))


def plan(videos: Sequence[VideoInput], bases: dict, options: BatchOptions) -> tuple[list[VideoJob], dict]:
    """(jobs to run, table row per video for the ones that need no work)."""
    s = options.settings
    model_hash = model_sha256(s.model)
    settings_items = s.fingerprint_items()
    jobs, rows = [], {}
    for v in videos:
        outputs = video_outputs(options.out_dir, bases[v.name], csv=s.csv, jsonl=s.jsonl, video=s.video)
        fingerprint = Fingerprint.of(v.path, model_hash, settings_items)
        job = VideoJob(v.name, v.path, outputs, s, fingerprint)
        state, marker = video_state(outputs, fingerprint)
        if options.force or state is VideoState.TODO or (state is VideoState.FAILED and options.retry_failed):
            jobs.append(job)
            rows[v.name] = _row(v.name, v.path, "pending")
        else:
            rows[v.name] = _marker_row(job, marker, this_run=False)
    return jobs, rows


def _marker_row(job: VideoJob, marker: dict, this_run: bool) -> dict:
    return _row(job.video, job.input, marker["status"], this_run=this_run, error=marker.get("error", ""),
                **marker.get("result", {}))


def _settle_pending(jobs: Sequence[VideoJob], rows: dict) -> None:
    """After Ctrl-C: a worker writes its video's marker before this process collects the result, so a video
    can be finished on disk while its row still says pending; the marker decides, as a rerun's plan would."""
    for job in jobs:
        if rows[job.video]["status"] != "pending":
            continue
        state, marker = video_state(job.outputs, job.fingerprint)
        if state is not VideoState.TODO:
            rows[job.video] = _marker_row(job, marker, this_run=True)


def _row(video: str, input_path: Path, status: str, this_run: bool | None = None, **fields) -> dict:
    row = {"video": video, "status": status, "input": str(input_path), **fields}
    if this_run is not None:
        row["this_run"] = "yes" if this_run else "no"
    return row


def run_batch(videos: Sequence[VideoInput], options: BatchOptions,
              report: Callable[[str], None] | None = None) -> BatchReport:
    """Run the batch; `report` receives the one status line (what runs where) before the work starts."""
    out_dir = Path(options.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamFerError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    bases = output_bases(videos)  # from the whole list, so every shard names a video the same way
    if options.shard is not None:
        videos = options.shard.select(videos)
    table_name, dataset_name = batch_file_names(options.shard)
    with one_run_at_a_time(out_dir / f".{table_name}.lock", options.shard):
        return _run(videos, bases, options, out_dir / table_name, out_dir / dataset_name, out_dir / LOG_NAME,
                    report)


@contextlib.contextmanager
def one_run_at_a_time(lock_path: Path, shard: Shard | None):
    """Holds an exclusive lock on `lock_path` (POSIX advisory; NFS supports it) or fails at once: two runs of
    the same batch (or shard) in one folder would do videos twice."""
    import fcntl

    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            what = f"shard {shard}" if shard is not None else "batch"
            raise StreamFerError(f"another stream-fer batch is running this {what} in {lock_path.parent}; "
                                 "wait for it to finish (its finished videos will be skipped)") from None
        yield


def _run(videos: Sequence[VideoInput], bases: dict, options: BatchOptions, table_path: Path, dataset_path: Path,
         log_path: Path, report: Callable[[str], None] | None) -> BatchReport:
    out_dir = Path(options.out_dir)
    jobs, rows = plan(videos, bases, options)
    by_video = {job.video: job for job in jobs}
    frames, t0, interrupted, runner_name = 0, time.perf_counter(), False, "nothing to run"
    written = False

    def write_batch_files() -> float:
        """batch.csv and the combined dataset, as the batch stands now; the seconds of this run's work."""
        nonlocal written
        written = True
        seconds = time.perf_counter() - t0
        ordered = [rows[v.name] for v in videos]
        write_table(table_path, ordered)
        parts = [(r["video"], video_outputs(out_dir, bases[r["video"]]).parquet) for r in ordered
                 if r["status"] == "done"]
        if not parts:
            dataset_path.unlink(missing_ok=True)  # no finished video: no dataset (an old one would be stale)
        elif write_dataset(dataset_path, parts):
            log.info("wrote %s (%d videos)", dataset_path, len(parts))
        return seconds

    seconds = 0.0
    try:
        if jobs:
            runner = _make_runner(options, jobs)
            with runner:
                if options.ray:
                    runner.check_shared_filesystem(jobs[0].input)
                runner_name = runner.describe()
                log.info("%d videos, %d to run on %s", len(videos), len(jobs), runner_name)
                if report is not None:
                    report(f"{videos_text(len(videos))}: {len(videos) - len(jobs)} done before, {len(jobs)} to run "
                           f"on {runner_name}")
                with _progress(options, len(jobs)) as bar:
                    failed = 0
                    for result in runner.run(longest_first(jobs)):
                        if result.fatal:  # e.g. a backend this machine cannot run: stop, leave all to redo
                            raise StreamFerError(result.error)
                        frames += result.frames
                        rows[result.video] = _result_row(by_video[result.video], result)
                        if result.status == "failed":
                            failed += 1
                            _record(by_video[result.video], result, log_path)
                        if bar is not None:
                            elapsed = time.perf_counter() - t0
                            bar.set_postfix_str(f"{frames / elapsed:.1f} frames/s"
                                                + (f", {failed} failed" if failed else ""), refresh=False)
                            bar.update(1)
                # every video is done: the workers wind down (process exit, Ray's tasks) while this
                # process writes the batch's files
                runner.release()
                seconds = write_batch_files()
    except KeyboardInterrupt:
        interrupted = True
        _settle_pending(jobs, rows)
        # the stopped workers' staging folders: hidden, and a rerun clears them, but leave a tidy folder
        for job in jobs:
            if rows[job.video]["status"] == "pending" and job.outputs.folder.is_dir():
                for staging in job.outputs.folder.glob(job.outputs.staging_glob):
                    shutil.rmtree(staging, ignore_errors=True)
    finally:
        if not written:  # nothing to run, a failure or Ctrl-C: the files still say where the batch stands
            seconds = write_batch_files()
    ordered = [rows[v.name] for v in videos]
    counts = {status: sum(1 for r in ordered if r["status"] == status) for status in ("done", "failed", "pending")}
    return BatchReport(videos=len(videos), done=counts["done"], failed=counts["failed"], pending=counts["pending"],
                       ran=sum(1 for r in ordered if r.get("this_run") == "yes"), frames=frames, seconds=seconds,
                       runner=runner_name, table=table_path, dataset=dataset_path, log_path=log_path,
                       interrupted=interrupted,
                       failures=tuple((r["video"], r.get("error", "")) for r in ordered if r["status"] == "failed"))


def longest_first(jobs: Sequence[VideoJob]) -> list[VideoJob]:
    """The jobs by input size, largest first (a stand-in for the work a video needs, known without opening
    it): the last videos to start are then short ones, so the workers finish close together instead of one
    working alone on a long video at the end. Only the order of work changes: the table keeps input order."""
    return sorted(jobs, key=lambda job: job.fingerprint.input_size, reverse=True)


def _make_runner(options: BatchOptions, jobs: Sequence[VideoJob]):
    if options.ray:
        from stream_fer.batch.ray_runner import RayRunner

        return RayRunner(options.settings, options.ray_address, options.out_dir, num_cpus=options.workers,
                         max_attempts=options.max_attempts)
    from stream_fer.batch.pool import PoolRunner

    workers = min(options.workers or _default_workers(), len(jobs))
    return PoolRunner(options.settings, workers, max_attempts=options.max_attempts)


def _default_workers() -> int:
    from stream_fer.batch.pool import default_workers

    return default_workers()


def _result_row(job: VideoJob, result: JobResult) -> dict:
    return _row(job.video, job.input, result.status, this_run=True, error=result.error, attempts=result.attempts,
                **result.table_fields())


def _record(job: VideoJob, result: JobResult, log_path: Path) -> None:
    if not job.outputs.failed.exists():  # the job writes its own; not when its worker died
        record_failure(job, result)
    try:
        append_log(log_path, result.video, result.error, result.traceback or "(no traceback: " + result.error + ")")
    except OSError as exc:
        log.warning("could not append to %s: %s", log_path, exc)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _progress(options: BatchOptions, total: int):
    if not options.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="stream-fer batch", dynamic_ncols=True, file=sys.stderr,
                disable=None)
