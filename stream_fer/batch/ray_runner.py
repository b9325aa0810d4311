"""The Ray runner: the same per-video job as Ray tasks, on a local Ray (no address) or an existing
cluster (`auto`, `host:port`, `ray://host:port`). Ray is an optional extra (`pip install
'stream-fer[ray]'`); nothing else in stream-fer imports it.

- One task per video, one CPU each; a worker process keeps its engine between tasks.
- A task whose worker process or node dies is retried by Ray (`max_retries`); a video that fails with a real
  error is not retried (the job returns its error as a result, and `retry_exceptions=False`).
- Ctrl-C cancels the tasks in flight (force: their workers are killed, nothing reaches a final name).
- Workers write the outputs themselves, so the output folder and the inputs must be on a filesystem that
  every node mounts at the same path; `check_shared_filesystem` proves that on every node first."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from stream_fer.batch.job import BatchSettings, JobResult, VideoJob, error_line, limit_threads, run_job, warm_up
from stream_fer.errors import StreamFerError, first_line

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
_WAIT_S = 0.25
_PROBE_TIMEOUT_S = 120.0
_CONNECT_TIMEOUT_S = 10.0
_worker_ready = False


def import_ray():
    try:
        import ray
    except ImportError:
        raise StreamFerError("--ray needs Ray: pip install 'stream-fer[ray]'") from None
    return ray


def _ray_job(job: VideoJob) -> JobResult:
    global _worker_ready
    if not _worker_ready:  # the first task in this worker process: as the pool's initializer does
        limit_threads()
        warm_up(job.settings)
        _worker_ready = True
    return run_job(job)


def _probe(probe_path: str, token: str, input_path: str) -> tuple[str, str]:
    """On one node: (host, problem or ""). Reads the driver's probe file, writes a reply beside it."""
    host = socket.gethostname()
    probe = Path(probe_path)
    try:
        if probe.read_text() != token:
            return host, f"{probe.parent} on {host} is not the driver's folder (the probe file differs)"
    except OSError as exc:
        return host, f"{host} cannot see the output folder {probe.parent} ({exc.strerror or exc})"
    try:
        (probe.parent / f"{probe.name}.{host}.{os.getpid()}").write_text(token)
    except OSError as exc:
        return host, f"{host} cannot write to the output folder {probe.parent} ({exc.strerror or exc})"
    if not os.access(input_path, os.R_OK):
        return host, f"{host} cannot read the input {input_path}"
    return host, ""


def _check_reachable(address: str) -> None:
    """One clear error for a host:port (or ray://host:port) nobody answers on: ray.init would wait on it for
    a long time."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise StreamFerError(f"--ray {address}: give auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise StreamFerError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


class RayRunner:
    """`with RayRunner(settings, address, out_dir) as runner: for result in runner.run(jobs): ...`"""

    def __init__(self, settings: BatchSettings, address: str | None, out_dir: Path, *,
                 num_cpus: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.settings = settings
        self.address = address
        self.out_dir = Path(out_dir)
        self.num_cpus = num_cpus
        self.max_attempts = max_attempts
        self._ray = None
        self._started_here = False
        self._pending: dict = {}

    def describe(self) -> str:
        if self._ray is None:
            return "Ray"
        cpus = int(self._ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for n in self._ray.nodes() if n.get("Alive"))
        where = "a local Ray" if self._started_here else f"the Ray cluster at {self.address}"
        return f"{where} ({nodes} node{'s' if nodes != 1 else ''}, {cpus} CPUs)"

    def __enter__(self) -> RayRunner:
        ray = import_ray()
        if self.address not in (None, "auto"):
            _check_reachable(self.address)
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(address=self.address, **kwargs)
        except ConnectionError as exc:
            raise StreamFerError(f"cannot join the Ray cluster at {self.address}: {first_line(exc)}") from None
        self._ray = ray
        self._started_here = self.address is None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        ray, self._ray = self._ray, None
        if ray is None:
            return
        try:
            if exc_type is not None:
                for ref in list(self._pending):
                    try:
                        ray.cancel(ref, force=True)
                    except Exception as cancel_exc:  # noqa: BLE001 - cancel what can be cancelled
                        log.debug("cancel: %s", cancel_exc)
        finally:
            self._pending.clear()
            ray.shutdown()

    def release(self) -> None:
        """Every video is done (the pool's runner lets its workers exit here; Ray's stay with the cluster)."""

    def check_shared_filesystem(self, sample_input: Path) -> None:
        """Every node with CPUs can read the output folder as the driver wrote it, write into it, and read
        an input; otherwise one StreamFerError naming the first node that cannot."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        self.out_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        probe = self.out_dir / f".stream-fer-probe-{token}"
        probe.write_text(token)
        try:
            remote = ray.remote(num_cpus=0, max_retries=0)(_probe)
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token, str(sample_input)) for n in nodes]
            try:
                answers = ray.get(refs, timeout=_PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise StreamFerError(f"the Ray nodes did not answer within {_PROBE_TIMEOUT_S:.0f} s") from None
        finally:
            for path in self.out_dir.glob(f"{probe.name}*"):
                path.unlink(missing_ok=True)
        for _host, problem in answers:
            if problem:
                raise StreamFerError(f"{problem}: --out-dir and the inputs must be on a filesystem that every "
                                     "Ray node mounts at the same path")

    def run(self, jobs: Sequence[VideoJob]) -> Iterator[JobResult]:
        """Results as the videos finish (in any order)."""
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=self.max_attempts - 1, retry_exceptions=False)(_ray_job)
        self._pending = {remote.remote(job): job for job in jobs}
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=_WAIT_S)
            for ref in ready:
                job = self._pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the call failed outside the job's own handling
                    yield JobResult(job.video, "failed", error=error_line(getattr(exc, "cause", None) or exc))
                    continue
                except ray.exceptions.RayError as exc:  # its worker or node kept dying: Ray gave up
                    yield JobResult(job.video, "failed", attempts=self.max_attempts,
                                    error=f"the Ray worker died {self.max_attempts} times ({first_line(exc)})")
                    continue
                # each crashed attempt leaves its staging folder, which the next attempt clears
                yield replace(result, attempts=1 + result.leftovers)
