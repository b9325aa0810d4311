"""Small helpers for the app tests (imported by tests/app's conftest and test modules)."""

from __future__ import annotations

import socket

APP_TEST_UPLOAD_MB = 2  # the served test app's upload limit: the test media are below it


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rtsp_server_class():
    """The project's test RTSP server (tests/stream_fer/rtsp_server.py), loaded once under its own name."""
    import importlib.util
    import sys
    from pathlib import Path

    import pytest

    path = Path(__file__).resolve().parents[1] / "stream_fer" / "rtsp_server.py"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    name = "stream_fer_tests_rtsp_server"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.RtspServer
