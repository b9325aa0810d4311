"""The batch command's own checks: one-line errors before any worker starts, Ray never imported unless asked,
and a clear line when --ray is asked for without Ray installed. (No video is analysed here.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from batch_helpers import make_inputs, run_batch_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("cli") / "in", good=["a.mp4"])


@pytest.mark.parametrize("extra, message", [
    (["--shard", "3/2"], "--shard 3/2: K must be between 1 and N"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--max-faces", "0"], "--max-faces must be at least 1"),
    (["--smoothing", "kalman"], "kalman"),
    (["--model", "/nonexistent/model"], "model folder not found"),
])
def test_bad_options_are_one_line_errors(inputs: Path, tmp_path: Path, extra: list[str], message: str):
    proc = run_batch_cli(str(inputs), "--out-dir", str(tmp_path / "out"), *extra, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("stream-fer: error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "a.done.json").exists()


def test_a_missing_input_names_itself(inputs: Path, tmp_path: Path):
    proc = run_batch_cli(str(inputs), str(tmp_path / "typo"), "--out-dir", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2 and f"stream-fer: error: input not found: {tmp_path / 'typo'}" in proc.stderr


def test_ray_is_imported_only_for_ray(inputs: Path, tmp_path: Path):
    code = ("import sys\n"
            "from stream_fer.cli import build_parser\n"
            "import stream_fer.batch.pool, stream_fer.batch.runner, stream_fer.commands.batch\n"
            "build_parser()\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n"
            "sys.modules['ray'] = None  # now as on a machine without the extra\n"
            "from stream_fer.cli import main\n"
            f"sys.exit(main(['batch', {str(inputs)!r}, '--out-dir', {str(tmp_path / 'out')!r}, '--ray']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "stream-fer: error: --ray needs Ray: pip install 'stream-fer[ray]'" in proc.stderr


def test_a_model_the_workers_cannot_load_stops_the_batch(inputs: Path, tmp_path: Path):
    if importlib.util.find_spec("tensorrt") is not None:  # pragma: no cover - a GPU machine
        pytest.skip("TensorRT is installed here: the tensorrt backend may well load")
    proc = run_batch_cli(str(inputs), "--out-dir", str(tmp_path / "out"), "--backend", "tensorrt", "--workers", "1",
                         timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "stream-fer: error: cannot load the model: " in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").glob("*.failed.json"))  # not the video's fault: it stays to do
    assert "a.mp4,pending" in (tmp_path / "out" / "batch.csv").read_text()


def test_a_landmarker_the_workers_cannot_load_stops_the_batch(inputs: Path, tmp_path: Path):
    """The same for every video: one line and a stop, not one failure per video."""
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a MediaPipe model" * 100)
    proc = run_batch_cli(str(inputs), "--out-dir", str(tmp_path / "out"), "--landmarker", str(bad), "--workers", "1",
                         timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "stream-fer: error: cannot start the analysis: face landmark model" in proc.stderr
    assert "Traceback" not in proc.stderr and "failed: " not in proc.stderr
    assert not list((tmp_path / "out").glob("*.failed.json"))
    assert "a.mp4,pending" in (tmp_path / "out" / "batch.csv").read_text()


def test_a_second_run_of_the_same_batch_at_once_is_refused(inputs: Path, tmp_path: Path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".batch.csv.lock", "a") as held:  # as a running batch holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_batch_cli(str(inputs), "--out-dir", str(out), timeout=60)
        sharded = run_batch_cli(str(inputs), "--out-dir", str(out), "--shard", "1/1", "--max-frames", "1",
                                timeout=120)
    assert proc.returncode == 2 and "stream-fer: error: another stream-fer batch is running this batch" in proc.stderr
    assert not (out / "batch.csv").exists()
    assert sharded.returncode == 0, sharded.stderr  # a shard has its own lock


@pytest.mark.parametrize("address, message", [("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
                                              ("nonsense", "--ray nonsense: give auto, host:port or ray://host:port")])
def test_a_ray_address_nobody_answers_on_is_one_line(inputs: Path, tmp_path: Path, address: str, message: str):
    pytest.importorskip("ray", reason="Ray is an optional extra")
    proc = run_batch_cli(str(inputs), "--out-dir", str(tmp_path / "out"), f"--ray={address}", timeout=60)
    assert proc.returncode == 2 and f"stream-fer: error: {message}" in proc.stderr, proc.stderr
