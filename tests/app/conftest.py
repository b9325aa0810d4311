"""Fixtures for the app tests: the real default model on ONNX Runtime (CPU), the real landmarker, the app's
handlers as plain functions, and the app itself served on 127.0.0.1 (a free port) in a background thread
for gradio_client and the browser. Everything is skipped, with the reason, where a piece is missing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def app_factory(onnx_engine, landmarker_model):
    """The shared analyzer factory of one server: every backend name the page offers maps to the loaded
    engine (CI has only the CPU)."""
    from stream_fer.app.sessions import AnalyzerFactory, EnginePool

    return AnalyzerFactory(EnginePool(loader=lambda **_: onnx_engine), landmarker_model)


@pytest.fixture(scope="session")
def app_handlers(app_factory):
    from stream_fer.app.handlers import AppHandlers
    from stream_fer.app.settings import AppConfig

    return AppHandlers(AppConfig(), app_factory)


@pytest.fixture(scope="session")
def gradio_temp(tmp_path_factory):
    """Gradio's upload and cache folder for this test session (GRADIO_TEMP_DIR), so nothing lands in the
    machine's shared /tmp/gradio."""
    path = tmp_path_factory.mktemp("gradio")
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    yield path
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    demo: object


@pytest.fixture(scope="session")
def app_server(app_factory, gradio_temp):
    """The app on 127.0.0.1, on a free port, in a background thread; closed at the end of the session."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_helpers import APP_TEST_UPLOAD_MB, free_port

    from stream_fer.app.app import build_app, launch
    from stream_fer.app.settings import AppConfig

    config = AppConfig(max_upload_mb=APP_TEST_UPLOAD_MB)
    demo = build_app(config, app_factory)
    port = free_port()
    _, url = launch(demo, "127.0.0.1", port, APP_TEST_UPLOAD_MB, block=False, quiet=True)
    try:
        yield Served(url.rstrip("/") + "/", port, demo)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def app_client(app_server, tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")
    return gradio_client.Client(app_server.url, verbose=False,
                                download_files=str(tmp_path_factory.mktemp("client-downloads")))


@pytest.fixture(scope="session")
def single_face_video(sample_video) -> Path:
    """The sample clip shipped in the package: one woman left of centre, neutral (a hand at her mouth) ->
    broad smile from frame 12 -> laugh, 96 frames, 640x360, 23.976 fps, with audio."""
    return sample_video
