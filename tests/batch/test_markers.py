"""Done-markers and the plan they drive: which videos a rerun skips, redoes, or retries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stream_fer.batch.inputs import discover
from stream_fer.batch.job import BatchSettings
from stream_fer.batch.layout import output_bases
from stream_fer.batch.markers import write_atomic, write_marker
from stream_fer.batch.runner import BatchOptions, _settle_pending, plan


@pytest.fixture()
def batch(tmp_path: Path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"video " + name.encode())
    videos = discover([str(tmp_path / "in")])
    return videos, output_bases(videos), tmp_path / "out"


def _finish(videos, bases, options, done=("a.mp4",), failed=("b.mp4",)) -> None:
    """Markers as finished jobs leave them: a.mp4 done (with its outputs), b.mp4 failed, c.mp4 untouched."""
    jobs, _ = plan(videos, bases, options)
    for job in jobs:
        if job.video in done:
            for path in job.outputs.data_files.values():
                write_atomic(path, "output")
            write_marker(job.outputs.done, status="done", video=job.video, input_path=job.input,
                         fingerprint=job.fingerprint, result={"frames": 5}, outputs=job.outputs)
        elif job.video in failed:
            write_marker(job.outputs.failed, status="failed", video=job.video, input_path=job.input,
                         fingerprint=job.fingerprint, result={}, error="not a readable video file")


def _todo(videos, bases, options) -> list[str]:
    return [job.video for job in plan(videos, bases, options)[0]]


def test_done_and_failed_videos_are_skipped_the_rest_is_run(batch):
    videos, bases, out = batch
    options = BatchOptions(out_dir=out)
    assert _todo(videos, bases, options) == ["a.mp4", "b.mp4", "c.mp4"]
    _finish(videos, bases, options)
    jobs, rows = plan(videos, bases, options)
    assert [j.video for j in jobs] == ["c.mp4"]
    assert rows["a.mp4"]["status"] == "done" and rows["a.mp4"]["frames"] == 5 and rows["a.mp4"]["this_run"] == "no"
    assert rows["b.mp4"]["status"] == "failed" and rows["b.mp4"]["error"] == "not a readable video file"
    assert rows["c.mp4"]["status"] == "pending"


def test_after_ctrl_c_a_video_whose_worker_finished_is_not_left_pending(batch):
    """A worker writes its marker before the batch process collects the result; Ctrl-C in between must not
    leave the table saying pending for a finished video (a rerun would then disagree with it)."""
    videos, bases, out = batch
    options = BatchOptions(out_dir=out)
    jobs, rows = plan(videos, bases, options)
    _finish(videos, bases, options)  # a.mp4 and b.mp4 finished on disk, not yet collected
    _settle_pending(jobs, rows)
    assert rows["a.mp4"]["status"] == "done" and rows["a.mp4"]["frames"] == 5 and rows["a.mp4"]["this_run"] == "yes"
    assert rows["b.mp4"]["status"] == "failed" and rows["b.mp4"]["error"] == "not a readable video file"
    assert rows["c.mp4"]["status"] == "pending"


def test_force_and_retry_failed(batch):
    videos, bases, out = batch
    _finish(videos, bases, BatchOptions(out_dir=out))
    assert _todo(videos, bases, BatchOptions(out_dir=out, retry_failed=True)) == ["b.mp4", "c.mp4"]
    assert _todo(videos, bases, BatchOptions(out_dir=out, force=True)) == ["a.mp4", "b.mp4", "c.mp4"]


def test_a_changed_input_is_redone(batch):
    videos, bases, out = batch
    _finish(videos, bases, BatchOptions(out_dir=out))
    a = videos[0].path
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    b = videos[1].path
    b.write_bytes(b.read_bytes() + b"more")  # the broken file replaced: a new try, no flag needed
    assert _todo(videos, bases, BatchOptions(out_dir=out)) == ["a.mp4", "b.mp4", "c.mp4"]


def test_other_settings_redo_everything(batch):
    videos, bases, out = batch
    _finish(videos, bases, BatchOptions(out_dir=out))
    assert _todo(videos, bases, BatchOptions(out_dir=out, settings=BatchSettings(max_faces=2))) == \
        ["a.mp4", "b.mp4", "c.mp4"]
    # and an output asked for now that the earlier run did not write
    assert "a.mp4" in _todo(videos, bases, BatchOptions(out_dir=out, settings=BatchSettings(csv=True)))
    # each face read alone instead of with its mirror image: other numbers, so redone
    assert _todo(videos, bases, BatchOptions(out_dir=out, settings=BatchSettings(mirror=False))) == \
        ["a.mp4", "b.mp4", "c.mp4"]


def test_the_mirror_settings_keep_the_fingerprints_of_earlier_outputs():
    """Every face read with its mirror image (mirror=True, mirror_below=1) is what every batch did before the
    settings existed: it adds nothing to the fingerprint, so finished outputs stay finished. The default since
    session 16 reads the mirror image only where the crop is unsure: other numbers, another fingerprint."""
    every = BatchSettings(mirror_below=1.0).fingerprint_items()
    assert "mirror" not in every and "mirror_below" not in every
    default = BatchSettings().fingerprint_items()
    assert "mirror" not in default and default["mirror_below"] == 0.7
    alone = BatchSettings(mirror=False).fingerprint_items()
    assert alone["mirror"] is False and "mirror_below" not in alone


def test_a_missing_output_or_a_damaged_marker_means_not_done(batch):
    videos, bases, out = batch
    options = BatchOptions(out_dir=out)
    _finish(videos, bases, options)
    a_job = plan(videos, bases, BatchOptions(out_dir=out, force=True))[0][0]
    a_job.outputs.summary.unlink()
    assert "a.mp4" in _todo(videos, bases, options)
    _finish(videos, bases, options)
    a_job.outputs.done.write_text(a_job.outputs.done.read_text()[:40])  # cut short by hand
    assert "a.mp4" in _todo(videos, bases, options)


def test_the_marker_records_the_fingerprint(batch):
    videos, bases, out = batch
    _finish(videos, bases, BatchOptions(out_dir=out))
    marker = json.loads((out / "a.done.json").read_text())
    fp = marker["fingerprint"]
    assert fp["input_size"] == videos[0].path.stat().st_size
    assert fp["input_mtime_ns"] == videos[0].path.stat().st_mtime_ns
    assert len(fp["model_sha256"]) == 64 and fp["stream_fer_version"]
    assert fp["settings"]["max_faces"] == 1 and marker["outputs"]["parquet"] == "a.parquet"


def test_atomic_writes_leave_no_temporary_file(tmp_path: Path):
    target = tmp_path / "x" / "f.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # readable like any new file, not 0600
