"""Small helpers for the app tests (imported by tests/app's conftest and test modules)."""

from __future__ import annotations

import socket

APP_TEST_UPLOAD_MB = 2  # the served test app's upload limit: the test media are below it


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
