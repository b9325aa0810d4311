"""`stream-fer batch --ray=ADDRESS` on a real local Ray (two CPUs, started once for this module), through the
real CLI in a subprocess: results and errors as on the pool, a Ray worker killed mid-video, Ctrl-C and resume.
Few tests: a Ray start costs seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import av
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'stream-fer[ray]'")

from batch_helpers import SAMPLE_FRAMES, batch_command, leftovers, make_inputs, read_table, run_batch_cli, wait_for

from stream_fer.batch.ray_runner import _probe


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _parent(pid: int) -> int:
    """The parent's pid from /proc/PID/stat (the field after the parenthesised command name); 0 if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _ours(pid: int) -> bool:
    """The process descends from this test process (so belongs to the Ray cluster it started, not to
    another run's on the same machine)."""
    while pid > 1:
        if pid == os.getpid():
            return True
        pid = _parent(pid)
    return False


def _ray_workers_running_a_video() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::_ray_job") and _ours(int(proc.name)):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_ray_batch_writes_what_the_pool_writes(ray_address, tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", good=["a/good.mp4", "b/good.mp4"], broken=["b/broken.mp4"])
    out = tmp_path / "out"
    proc = run_batch_cli(str(inputs), "--out-dir", str(out), "--max-frames", "8", "--jsonl", "--video",
                         f"--ray={ray_address}")
    assert proc.returncode == 1, proc.stderr
    assert "on the Ray cluster at" in proc.stderr and "1 of 3 videos failed" in proc.stderr
    table = read_table(out)
    assert {v: r["status"] for v, r in table.items()} == {"a/good.mp4": "done", "b/broken.mp4": "failed",
                                                          "b/good.mp4": "done"}
    assert "broken.mp4" in table["b/broken.mp4"]["error"]
    df = pd.read_parquet(out / "batch.parquet")
    assert df.groupby("video")["frame_index"].nunique().to_dict() == {"a/good.mp4": 8, "b/good.mp4": 8}
    assert (out / "a" / "good.jsonl").is_file() and (out / "b" / "good.summary.json").is_file()
    with av.open(str(out / "a" / "good.annotated.mp4")) as annotated:  # --video: a playable, complete file
        assert sum(1 for _ in annotated.decode(video=0)) == 8
    assert leftovers(out) == [] and not list(out.glob(".stream-fer-probe*"))


def test_a_ray_worker_killed_mid_video_is_retried(ray_address, tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", good=["whole.mp4"])
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(str(inputs), "--out-dir", str(out), f"--ray={ray_address}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(out.glob(".whole.partial-*")), 120, "the video to start", proc)
        time.sleep(0.5)
        workers = wait_for(_ray_workers_running_a_video, 10, "the Ray worker's process title")
        assert len(workers) == 1 and not (out / "whole.done.json").exists()
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    row = read_table(out)["whole.mp4"]
    assert row["status"] == "done" and row["attempts"] == "2"
    assert sorted(pd.read_parquet(out / "whole.parquet")["frame_index"].unique()) == list(range(SAMPLE_FRAMES))
    assert leftovers(out) == []


def test_ctrl_c_cancels_ray_tasks_and_a_rerun_finishes(ray_address, tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", good=["one.mp4", "two.mp4"])
    out = tmp_path / "out"
    args = (str(inputs), "--out-dir", str(out), "--max-frames", "48", f"--ray={ray_address}")
    proc = subprocess.Popen(batch_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(out.glob(".*.partial-*")), 120, "a video to start", proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: not _ray_workers_running_a_video(), 30, "the cancelled tasks to stop")
    for data in out.glob("*.parquet"):  # a video's data under its final name only with its done-marker
        assert data.name == "batch.parquet" or (out / f"{data.stem}.done.json").exists()
    proc = run_batch_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in read_table(out).values()} == {"done"}
    assert leftovers(out) == []


def test_the_filesystem_probe_names_what_a_node_cannot_do(tmp_path: Path):
    probe = tmp_path / ".stream-fer-probe-x"
    assert "cannot see the output folder" in _probe(str(probe), "token", str(probe))[1]
    probe.write_text("other")
    assert "not the driver's folder" in _probe(str(probe), "token", str(probe))[1]
    probe.write_text("token")
    assert "cannot read the input" in _probe(str(probe), "token", str(tmp_path / "missing.mp4"))[1]
    assert _probe(str(probe), "token", str(probe))[1] == ""
