"""`stream-fer batch` on the real local process pool, through the real CLI in a subprocess: a corrupt video
among good ones, reruns that do no work, --retry-failed, a worker killed mid-video, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from batch_helpers import (
    SAMPLE_FRAMES,
    batch_command,
    children,
    is_alive,
    leftovers,
    make_inputs,
    read_table,
    run_batch_cli,
    wait_for,
)

MAX_FRAMES = 12  # enough rows to check; the batch machinery, not the analysis, is under test


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Three videos, one of them unreadable, run once on a two-worker pool."""
    root = tmp_path_factory.mktemp("pool")
    inputs = make_inputs(root / "in", good=["good1.mp4", "sub/good2.mp4"], broken=["sub/broken.mp4"])
    out = root / "out"
    args = (str(inputs), "--out-dir", str(out), "--workers", "2", "--max-frames", str(MAX_FRAMES), "--csv")
    return inputs, out, args, run_batch_cli(*args)


def test_a_corrupt_video_fails_alone(finished):
    _, out, _, proc = finished
    assert proc.returncode == 1, proc.stderr
    assert "stream-fer: error: 1 of 3 videos failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    table = read_table(out)
    assert sorted(table) == ["good1.mp4", "sub/broken.mp4", "sub/good2.mp4"]
    broken = table["sub/broken.mp4"]
    assert broken["status"] == "failed" and "broken.mp4" in broken["error"]  # the source's one-line error
    assert "\n" not in broken["error"]
    for name in ("good1.mp4", "sub/good2.mp4"):
        assert table[name]["status"] == "done" and table[name]["error"] == ""
        assert int(table[name]["frames"]) == MAX_FRAMES and int(table[name]["faces"]) == MAX_FRAMES
        assert float(table[name]["fps"]) > 0 and table[name]["this_run"] == "yes"
    log = (out / "batch.log").read_text()
    assert "sub/broken.mp4" in log and "Traceback (most recent call last)" in log
    assert json.loads((out / "sub" / "broken.failed.json").read_text())["status"] == "failed"
    assert not (out / "sub" / "broken.parquet").exists() and not (out / "sub" / "broken.done.json").exists()
    assert leftovers(out) == []


def test_each_video_has_its_outputs_under_its_relative_path(finished):
    _, out, _, _ = finished
    for base in (out / "good1", out / "sub" / "good2"):
        rows = pd.read_parquet(base.with_name(base.name + ".parquet"))
        assert sorted(rows["frame_index"].unique()) == list(range(MAX_FRAMES))
        assert len(pd.read_csv(base.with_name(base.name + ".csv"))) == len(rows)
        assert json.loads(base.with_name(base.name + ".summary.json").read_text())
        assert json.loads(base.with_name(base.name + ".done.json").read_text())["status"] == "done"
        assert not base.with_name(base.name + ".annotated.mp4").exists()  # data only unless --video


def test_the_combined_dataset_has_every_finished_video(finished):
    _, out, _, _ = finished
    df = pd.read_parquet(out / "batch.parquet")
    assert list(df.columns[:2]) == ["video", "frame_index"]
    assert df.groupby("video")["frame_index"].nunique().to_dict() == {"good1.mp4": MAX_FRAMES,
                                                                      "sub/good2.mp4": MAX_FRAMES}


def test_a_rerun_of_a_finished_batch_does_no_work(finished):
    _, out, args, _ = finished
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "batch.csv"}
    proc = run_batch_cli(*args)
    assert proc.returncode == 1  # the broken video still stands as failed
    assert "(nothing to do)" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "batch.csv"} == stamps
    assert {r["this_run"] for r in read_table(out).values()} == {"no"}


def test_shards_split_the_batch_and_write_their_own_tables(finished):
    _, out, args, _ = finished
    for k in (1, 2):
        proc = run_batch_cli(*args, "--shard", f"{k}/2")
        assert "(nothing to do)" in proc.stdout, proc.stderr
    one, two = read_table(out, "batch.shard-1-of-2.csv"), read_table(out, "batch.shard-2-of-2.csv")
    assert not set(one) & set(two) and sorted({*one, *two}) == sorted(read_table(out))
    assert set(pd.read_parquet(out / "batch.shard-1-of-2.parquet")["video"]) == \
        {v for v, r in one.items() if r["status"] == "done"}


def test_retry_failed_redoes_only_the_failed_video(finished):
    inputs, out, args, _ = finished
    good = {p: p.stat().st_mtime_ns for p in out.rglob("good*")}
    proc = run_batch_cli(*args, "--retry-failed")
    assert proc.returncode == 1 and "2 done before, 1 to run" in proc.stderr
    table = read_table(out)
    assert table["sub/broken.mp4"]["this_run"] == "yes" and table["sub/broken.mp4"]["status"] == "failed"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("good*")} == good
    assert (out / "batch.log").read_text().count(" UTC sub/broken.mp4: ") == 2  # one entry per failure


def test_a_worker_killed_mid_video_is_retried_and_its_output_is_complete(tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", good=["whole.mp4"])
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(str(inputs), "--out-dir", str(out), "--workers", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(out.glob(".whole.partial-*")), 120, "the video to start", proc)
        time.sleep(0.5)  # well into the video's 96 frames
        workers = [pid for pid, cmd in children(proc.pid) if "spawn_main" in cmd]
        assert len(workers) == 1
        assert not (out / "whole.done.json").exists()
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    row = read_table(out)["whole.mp4"]
    assert row["status"] == "done" and row["attempts"] == "2"
    frames = pd.read_parquet(out / "whole.parquet")["frame_index"]
    assert sorted(frames.unique()) == list(range(SAMPLE_FRAMES))
    assert leftovers(out) == []


def test_ctrl_c_then_rerun_finishes_with_nothing_done_twice(tmp_path: Path):
    names = [f"clip{i}.mp4" for i in range(3)]
    inputs = make_inputs(tmp_path / "in", good=names)
    out = tmp_path / "out"
    args = (str(inputs), "--out-dir", str(out), "--workers", "1", "--max-frames", "20")
    # started with SIGINT ignored, as a shell script's background job is: the explicit SIGINT still stops it
    proc = subprocess.Popen(batch_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: list(out.glob("*.done.json")), 180, "a first video to finish", proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted; run the same command again" in stderr and "Traceback" not in stderr
    first = read_table(out)
    done_first = {v for v, r in first.items() if r["status"] == "done"}
    assert done_first and len(done_first) < len(names)
    assert {r["status"] for v, r in first.items() if v not in done_first} == {"pending"}
    for name in set(names) - done_first:  # nothing of an unfinished video under a final name
        assert not list(out.glob(Path(name).stem + ".*"))
    assert leftovers(out) == []  # the stopped workers' staging folders are gone too
    markers = {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json")}

    proc = run_batch_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(done_first)} done before, {len(names) - len(done_first)} to run" in proc.stderr
    table = read_table(out)
    assert {r["status"] for r in table.values()} == {"done"}
    assert {v for v, r in table.items() if r["this_run"] == "yes"} == set(names) - done_first
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json") if p.name in markers} == markers
    assert leftovers(out) == []
    assert pd.read_parquet(out / "batch.parquet").groupby("video").size().to_dict() == {n: 20 for n in names}


def test_sigterm_stops_the_batch_as_ctrl_c_does(tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", good=["one.mp4"])
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_command(str(inputs), "--out-dir", str(out), "--workers", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(out.glob(".one.partial-*")), 120, "the video to start", proc)
        workers = [pid for pid, cmd in children(proc.pid) if "spawn_main" in cmd]
        proc.terminate()  # what a scheduler sends at its time limit
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted; run the same command again" in stderr, stderr
    assert read_table(out)["one.mp4"]["status"] == "pending" and leftovers(out) == []
    assert workers and not [pid for pid in workers if is_alive(pid)]  # no worker left running
