"""Fixtures for the per-frame analysis tests (align, tracking, smoothing, render, analyzer): the real ONNX
engine, a two-face frame composed from two stills, and helpers to build frames. The shared folder,
stills and the real landmarker come from tests/conftest.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from media import CLIPS

from stream_fer.frames import Frame

STILL_LAUGH = "WolfgangLanger_Pexels_f0300.png"


def _frame(rgb: np.ndarray, index: int = 0, fps: float = 30.0) -> Frame:
    return Frame(index=index, timestamp=index / fps, capture_time=time.monotonic(), rgb=rgb)


@pytest.fixture(scope="session")
def make_frame():
    """make_frame(rgb, index=0, fps=30.0) -> Frame with timestamp index / fps."""
    return _frame


@pytest.fixture(scope="session")
def laugh(detected_stills):
    still = detected_stills.get(STILL_LAUGH)
    if still is None:
        pytest.skip(f"{STILL_LAUGH} not among the stills")
    return still


@pytest.fixture(scope="session")
def two_faces(laugh, smile) -> np.ndarray:
    """Two people side by side: the laughing woman (left) and the smiling man (right), 1280 x 360."""
    assert laugh.rgb.shape == smile.rgb.shape
    return np.ascontiguousarray(np.concatenate([laugh.rgb, smile.rgb], axis=1))


@pytest.fixture(scope="session")
def clips(shared_dir):
    videos = shared_dir / "videos"
    missing = [name for name in CLIPS if not (videos / name).is_file()]
    if missing:
        pytest.skip(f"clips not in {videos}: {', '.join(missing)}")
    return {name: videos / name for name in CLIPS}
