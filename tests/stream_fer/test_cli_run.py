"""`stream-fer INPUT --out OUT.mp4` as a user runs it (a fresh interpreter): a real clip in, an annotated
clip with the same frames, timing and audio out plus its rows; every bad input is one stderr line
`stream-fer: error: ...`, a non-zero exit and no traceback; Ctrl-C leaves a playable video.

Runs use a tiny generated ONNX model with the engine interface (fake_engine.write_tiny_model), so they test
the product's paths without depending on the shipped model's weights."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from media import CLIPS, audio_packets, decode_times, truncated_copy, zero_frame_video

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("onnx", reason="the tiny test model is written with the onnx package")
    from fake_engine import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def env(landmarker_model):
    return {"STREAM_FER_LANDMARKER": str(landmarker_model)}


def _one_error_line(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stream-fer: error: "), lines[0]
    return lines[0]


def test_annotates_a_clip_with_same_frames_timing_audio_and_rows(cli, clips, model, env, tmp_path):
    src = clips["single_face.mp4"]
    out, rows, jl = tmp_path / "out.mp4", tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    result = cli(src, "--out", out, "--csv", rows, "--jsonl", jl, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    assert audio_packets(out) == audio_packets(src)
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert [int(r["frame_index"]) for r in table] == list(range(CLIPS["single_face.mp4"]))
    assert all(r["label"] for r in table)
    assert len(jl.read_text().splitlines()) == len(table)
    assert json.loads(jl.read_text().splitlines()[0])["frame_index"] == 0
    assert "72 frames" in result.stdout and "fps" in result.stdout and "landmarks" in result.stdout


def test_a_clip_without_faces_is_copied_through_with_empty_rows(cli, clips, model, env, tmp_path):
    src = clips["no_face.mp4"]
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    result = cli("run", src, "--out", out, "--csv", rows, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert len(table) == CLIPS["no_face.mp4"]
    assert all(r["num_faces"] == "0" and r["label"] == "" for r in table)


def test_rows_only_and_max_frames(cli, clips, model, env, tmp_path):
    rows = tmp_path / "rows.csv"
    result = cli(clips["face_noface.mov"], "--csv", rows, "--max-frames", "10", "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    with open(rows) as f:
        assert len(list(csv.DictReader(f))) == 10


def test_a_still_image_gives_an_annotated_image(cli, stills, model, env, tmp_path):
    out = tmp_path / "out.png"
    result = cli(stills[0], "--out", out, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    from stream_fer.images import read_rgb

    assert read_rgb(out).shape == read_rgb(stills[0]).shape


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUTS = {
    "missing file": (lambda clips, tmp: tmp / "missing.mp4", "input not found"),
    "text file named .mp4": (lambda clips, tmp: _text_mp4(tmp), "not a readable video"),
    "truncated mp4": (lambda clips, tmp: truncated_copy(clips["single_face.mp4"], tmp / "cut.mp4"),
                      "not a readable video"),
    "video with no frames": (lambda clips, tmp: zero_frame_video(tmp / "none.avi"), "no video frames"),
    "unreachable rtsp": (lambda clips, tmp: f"rtsp://127.0.0.1:{_closed_port()}/x", "cannot open RTSP stream"),
    "missing webcam": (lambda clips, tmp: "97", "cannot open webcam"),
}


def _text_mp4(tmp: Path) -> Path:
    path = tmp / "notes.mp4"
    path.write_text("not a video\n" * 50)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_no_traceback(cli, clips, tmp_path, case):
    make, message = BAD_INPUTS[case]
    line = _one_error_line(cli(make(clips, tmp_path), "--out", tmp_path / "out.mp4", "--csv", tmp_path / "r.csv"))
    assert message in line
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("out", ["/proc/x.mp4", "/sys/x.mp4", "/dev/null/sub/x.mp4", "DIR"])
def test_unwritable_output_is_one_line_before_any_work(cli, clips, tmp_path, out):
    out = tmp_path if out == "DIR" else out
    line = _one_error_line(cli(clips["single_face.mp4"], "--out", out))
    assert "cannot write" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_output_under_a_read_only_directory(cli, clips, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = _one_error_line(cli(clips["single_face.mp4"], "--out", ro / "x.mp4"))
    finally:
        ro.chmod(0o755)
    assert "cannot write" in line


def test_usage_errors_are_one_line(cli, clips, tmp_path):
    assert "nothing to write" in _one_error_line(cli(clips["single_face.mp4"]))
    line = _one_error_line(cli(clips["single_face.mp4"], "--csv", tmp_path / "r.csv", "--smoothing", "bogus"))
    assert "unknown smoothing" in line


def test_ctrl_c_leaves_a_playable_video(clips, shared_dir, model, env, tmp_path):
    src = shared_dir / "videos" / "WolfgangLanger_Pexels.mp4"
    if not src.is_file():
        src = clips["face_noface.mov"]
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    proc = subprocess.Popen([sys.executable, "-m", "stream_fer.cli", str(src), "--out", str(out), "--csv",
                             str(rows), "--model", str(model)], cwd=REPO_ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # wait until frames are being written
            if rows.exists() and rows.stat().st_size > 2000:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    times = decode_times(out)  # opens and decodes: the container was finalised
    assert len(times) > 0
    assert times == pytest.approx(decode_times(src)[: len(times)], abs=1e-6)
    with open(rows) as f:
        assert len(list(csv.DictReader(f))) == len(times)


def test_rtsp_input_ends_cleanly_when_the_server_goes_away(cli, model, env, tmp_path):
    import threading

    from rtsp_server import RtspServer, encode_h264, synthetic_frames

    server = RtspServer(encode_h264(synthetic_frames(30, 320, 240), fps=30), fps=30).start()
    timer = threading.Timer(4.0, server.stop)  # after start-up and about a second of streaming
    timer.start()
    out, rows = tmp_path / "live.mp4", tmp_path / "live.csv"
    try:
        result = cli(server.url, "--out", out, "--csv", rows, "--reconnect", "2", "--model", model, env=env,
                     timeout=90)
    finally:
        timer.cancel()
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "reconnecting" in result.stderr and "gave up" in result.stderr
    times = decode_times(out)
    assert len(times) > 0 and all(b > a for a, b in itertools.pairwise(times))
    with open(rows) as f:
        assert len(list(csv.DictReader(f))) == len(times)
