"""`stream-fer serve` as a user runs it: the help, a taken port (one line, at once), that the CLI does not
import gradio unless the app runs, and a real start on 127.0.0.1 that serves the page and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serve_help_names_the_safe_defaults(cli):
    result = cli("serve", "--help")
    assert result.returncode == 0
    for text in ("--host", "127.0.0.1", "--port", "7860", "--backend", "--max-upload-mb", "--model",
                 "--max-sessions", "--session-idle"):
        assert text in result.stdout


def test_a_taken_port_is_one_line_and_fails_fast(cli):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        result = cli("serve", "--port", str(port))
        elapsed = time.monotonic() - t0
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"stream-fer: error: port {port} on 127.0.0.1 is already in use; choose another with --port"]
    assert elapsed < 15, "the port is checked before gradio and the model load"


@pytest.mark.parametrize("args, message", [
    (("--port", "70000"), "--port must be between 1 and 65535"),
    (("--max-upload-mb", "0"), "--max-upload-mb must be at least 1"),
    (("--host", "no-such-host.invalid"), "cannot listen on no-such-host.invalid"),
    (("--max-sessions", "0"), "--max-sessions must be at least 1"),
    (("--session-idle", "0"), "--session-idle must be more than 0 seconds"),
])
def test_bad_serve_arguments_are_one_line(cli, args, message):
    result = cli("serve", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_the_cli_does_not_import_gradio_unless_the_app_runs():
    code = ("import sys, stream_fer.cli as c; c.build_parser(); import stream_fer.app.handlers, "
            "stream_fer.app.sessions, stream_fer.app.jobs; print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_serve_starts_on_loopback_and_stops_on_ctrl_c(onnx_engine, landmarker_model, gradio_temp):
    import httpx
    from app_helpers import free_port

    port = free_port()
    env = {**os.environ, "STREAM_FER_LANDMARKER": str(landmarker_model), "GRADIO_TEMP_DIR": str(gradio_temp)}
    model = getattr(onnx_engine, "model_dir", None)
    cmd = [sys.executable, "-m", "stream_fer.cli", "serve", "--port", str(port), "--backend", "onnxruntime"]
    cmd += ["--model", str(model)] if model else []
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, page = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert page is not None, f"the app did not come up: {proc.poll()=}"
        assert page.status_code == 200 and "stream-fer" in page.text
        # Bound to loopback only: the machine's other addresses do not answer.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                outside = socket.gethostbyname(socket.gethostname())
            except OSError:
                outside = None
            if outside and not outside.startswith("127."):
                assert probe.connect_ex((outside, port)) != 0, "the app must not listen on other interfaces"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130), err
    assert "engine: using onnxruntime-cpu" in err, err
    assert "Traceback" not in err, err
