"""`stream-fer INPUT --out OUT.mp4` as a user runs it (a fresh interpreter): a real clip in, an annotated
clip with the same frames, timing and audio out plus its rows; a damaged input leaves an output that decodes
cleanly and one error line; an anamorphic input keeps the boxes on the face; every bad input is one stderr
line `stream-fer: error: ...`, a non-zero exit and no traceback; Ctrl-C leaves a playable video; the engine
choice is one start-up line (-v: the full selection); `stream-fer demo` runs on the shipped sample.

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

import numpy as np
import pytest
from media import (
    CLIPS,
    SAMPLE,
    anamorphic_copy,
    audio_packets,
    damaged_copy,
    decode_times,
    faststart_copy,
    index_last_copy,
    looped_copy,
    strict_decode,
    synthetic_video,
    truncated_copy,
    zero_frame_video,
)

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


def _engine_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "engine:" in line]


def test_annotates_a_clip_with_same_frames_timing_audio_and_rows(cli, clips, model, env, tmp_path):
    src = clips[SAMPLE]
    out, rows, jl = tmp_path / "out.mp4", tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    result = cli(src, "--out", out, "--csv", rows, "--jsonl", jl, "--model", model, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    assert audio_packets(out) == audio_packets(src)
    assert strict_decode(out)["video"] == CLIPS[SAMPLE]
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert [int(r["frame_index"]) for r in table] == list(range(CLIPS[SAMPLE]))
    assert all(r["label"] for r in table)
    assert len(jl.read_text().splitlines()) == len(table)
    assert json.loads(jl.read_text().splitlines()[0])["frame_index"] == 0
    assert "96 frames" in result.stdout and "fps" in result.stdout and "landmarks" in result.stdout
    # start-up: one line names the engine; on a machine without a GPU the skipped GPU engines are no news
    (engine,) = _engine_lines(result.stderr)
    assert engine.startswith("stream-fer: engine: using ") and "skipped" not in result.stderr
    if engine.startswith("stream-fer: engine: using onnxruntime-cpu"):
        assert engine == f"stream-fer: engine: using onnxruntime-cpu ({model}, fp32)"


def test_verbose_shows_the_full_engine_selection(cli, clips, model, env, tmp_path):
    from stream_fer.engines.select import AUTO_ORDER

    result = cli("-v", clips[SAMPLE], "--csv", tmp_path / "r.csv", "--max-frames", "1", "--model", model,
                 "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    lines = _engine_lines(result.stderr)
    chosen = lines[-1].split("engine: using ")[1].split(" ")[0]
    skipped = [line.split("engine: ")[1].split(" skipped")[0] for line in lines if " skipped: " in line]
    assert skipped == list(AUTO_ORDER[: AUTO_ORDER.index(chosen)]), lines  # every faster one, with its reason


def test_a_clip_without_faces_is_copied_through_with_empty_rows(cli, model, env, tmp_path):
    src = synthetic_video(tmp_path / "bars.mp4", frames=20, size=(320, 240))
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    result = cli("run", src, "--out", out, "--csv", rows, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 20
    assert all(r["num_faces"] == "0" and r["label"] == "" for r in table)


def test_a_damaged_input_leaves_an_output_that_decodes_cleanly(cli, clips, model, env, tmp_path):
    """Garbled video and audio packets and an early end: every frame that decodes is annotated, the output
    (kept) holds only audio that decodes, and the run ends non-zero with one error line after at most one
    line about the audio it left out."""
    damaged = damaged_copy(clips[SAMPLE], tmp_path / "damaged.mp4", audio_every=9, video_every=20)
    src = truncated_copy(faststart_copy(damaged, tmp_path / "fast.mp4"), tmp_path / "cut.mp4", 0.8)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    result = cli(src, "--out", out, "--csv", rows, "--model", model, "--no-progress", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "engine:" not in line
             and not line.startswith(f"stream-fer: {src.name}:")]
    assert lines[-1].startswith("stream-fer: error: ") and "truncated or corrupt: decoded" in lines[-1], lines
    assert "video packet(s) that do not decode were skipped" in lines[-1]
    assert len(lines) <= 2 and all("audio packet(s)" in line for line in lines[:-1]), lines
    counts = strict_decode(out)  # every packet of every stream decodes
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert 0 < counts["video"] == len(table) < CLIPS[SAMPLE] and counts.get("audio", 0) > 0


def test_an_anamorphic_input_keeps_the_boxes_on_the_face(cli, clips, model, env, landmarker, tmp_path):
    """4:3 pixels (480x360 stored, 640x360 on screen): the annotated video is 640x360 and each row's box is
    where the face is on screen, i.e. where MediaPipe finds it in the original square-pixel frames."""
    import av

    src = anamorphic_copy(clips[SAMPLE], tmp_path / "anamorphic.mp4", frames=3)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    result = cli(src, "--out", out, "--csv", rows, "--model", model, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (640, 360)
    with av.open(str(clips[SAMPLE])) as container:
        originals = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), container.decode(video=0))]
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3
    for row, rgb in zip(table, originals):
        want = np.array(landmarker.detect(rgb)[0].box)
        got = np.array([float(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1")])
        assert np.abs(got - want).max() < 0.04 * (want[2] - want[0]), (got, want)


def test_rows_only_and_max_frames(cli, clips, model, env, tmp_path):
    rows = tmp_path / "rows.csv"
    result = cli(clips[SAMPLE], "--csv", rows, "--max-frames", "10", "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    with open(rows) as f:
        assert len(list(csv.DictReader(f))) == 10


def test_the_collector_is_off_only_during_start_up(clips, model, env, tmp_path):
    """`run` holds Python's cyclic GC off while it starts (imports, model set-up) and turns it back on, with
    start-up's objects frozen, once the analysis begins; a run that fails before that turns it back on too."""
    code = f"""
import gc, sys
import stream_fer
from stream_fer.cli import build_parser, main
from stream_fer.commands.run import _run
args = build_parser().parse_args(["run", {str(clips[SAMPLE])!r}, "--csv", {str(tmp_path / "rows.csv")!r},
                                  "--max-frames", "20", "--model", {str(model)!r}, "--no-progress"])
collections, announced = [], []
analyze = stream_fer.analyze
def watched(*a, announce, **k):  # the real analysis; each start-up line noted with the collector's state
    def spy(line):
        announce(line)
        announced.append((line, gc.isenabled()))
    return analyze(*a, announce=spy, **k)
stream_fer.analyze = watched
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(gc.get_freeze_count()))
assert _run(args) == 0
assert gc.isenabled()
assert [on for _, on in announced] == [False, True], announced  # off while the engine loads, on once it runs
assert all(frozen > 0 for frozen in collections), collections  # no collection ran before start-up was frozen
assert main(["run", {str(tmp_path / "missing.mp4")!r}, "--csv", {str(tmp_path / "x.csv")!r}]) != 0
assert gc.isenabled()
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


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
    "truncated mp4": (lambda clips, tmp: truncated_copy(index_last_copy(clips[SAMPLE], tmp / "full.mp4"),
                                                        tmp / "cut.mp4"), "not a readable video"),
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
    line = _one_error_line(cli(clips[SAMPLE], "--out", out))
    assert "cannot write" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_output_under_a_read_only_directory(cli, clips, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = _one_error_line(cli(clips[SAMPLE], "--out", ro / "x.mp4"))
    finally:
        ro.chmod(0o755)
    assert "cannot write" in line


def test_usage_errors_are_one_line(cli, clips, tmp_path):
    assert "nothing to write" in _one_error_line(cli(clips[SAMPLE]))
    line = _one_error_line(cli(clips[SAMPLE], "--csv", tmp_path / "r.csv", "--smoothing", "bogus"))
    assert "unknown smoothing" in line


def test_ctrl_c_leaves_a_playable_video(clips, model, env, tmp_path):
    src = looped_copy(clips[SAMPLE], tmp_path / "long.mp4", times=4)  # 16 s: long enough to interrupt
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


def test_demo_annotates_the_shipped_sample_and_says_where_it_is(cli, env, tmp_path):
    """`stream-fer demo` (the README's first command) needs no data: it runs the main job on the sample
    clip inside the package, with the shipped model."""
    from stream_fer.samples import SAMPLE_VIDEO

    where = cli("demo", "--path", env=env)
    assert where.returncode == 0 and where.stdout.strip() == str(SAMPLE_VIDEO) and SAMPLE_VIDEO.is_file()
    out, rows = tmp_path / "annotated.mp4", tmp_path / "annotated.csv"
    result = cli("demo", "--out", out, "--csv", rows, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert f"demo on the sample clip {SAMPLE_VIDEO}" in result.stderr and "Wolfgang Langer" in result.stderr
    assert strict_decode(out)["video"] == CLIPS[SAMPLE] and audio_packets(out) == audio_packets(SAMPLE_VIDEO)
    with open(rows) as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    assert len(labels) == CLIPS[SAMPLE] and labels[-1] == "happiness"  # she ends laughing
    typed = tmp_path / "annotated.parquet"  # the demo writes every output that run does
    assert cli("demo", "--out", out, "--parquet", typed, "--max-faces", "1", "--no-progress", env=env).returncode == 0
    from stream_fer import read_results

    assert len(read_results(typed)) == CLIPS[SAMPLE]
