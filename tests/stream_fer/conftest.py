"""Fixtures for the per-frame analysis tests (align, tracking, smoothing, render, analyzer): the real ONNX
engine, a two-face frame composed from two stills, the clips by name, and helpers to build frames. The
sample clip, the stills, the shared folder and the real landmarker come from tests/conftest.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from media import CLIPS, SAMPLE

from stream_fer.frames import Frame


def _frame(rgb: np.ndarray, index: int = 0, fps: float = 30.0) -> Frame:
    return Frame(index=index, timestamp=index / fps, capture_time=time.monotonic(), rgb=rgb)


@pytest.fixture(scope="session")
def make_frame():
    """make_frame(rgb, index=0, fps=30.0) -> Frame with timestamp index / fps."""
    return _frame


@pytest.fixture(scope="session")
def two_faces(laugh, smile) -> np.ndarray:
    """Two faces side by side: the sample's laugh (left) and its broad smile (right), 1280 x 360."""
    assert laugh.rgb.shape == smile.rgb.shape
    return np.ascontiguousarray(np.concatenate([laugh.rgb, smile.rgb], axis=1))


class Clips:
    """The clips of media.CLIPS by name: the shipped sample always; a shared clip where ../shared has it,
    else the test asking for it is skipped, saying which clip and where it was looked for."""

    def __init__(self, sample, videos) -> None:
        self._sample, self._videos = sample, videos

    def __getitem__(self, name: str):
        if name == SAMPLE:
            return self._sample
        if name not in CLIPS:
            raise KeyError(name)
        path = self._videos / name
        if not path.is_file():
            pytest.skip(f"{name} is shared development data, not found in {self._videos} (set STREAM_FER_SHARED)")
        return path


@pytest.fixture(scope="session")
def clips(sample_video) -> Clips:
    from stream_fer.train.paths import shared_dir

    return Clips(sample_video, shared_dir() / "videos")
