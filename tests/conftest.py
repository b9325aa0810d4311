"""Shared fixtures: the development data folder (../shared), its stills, and one real MediaPipe landmarker.

Tests that need ../shared take the `shared_dir` fixture (or one built on it) and are skipped, with the
reason, where the folder is absent. STREAM_FER_SHARED overrides its location.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stream_fer.train.paths import shared_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = shared_dir()

# The stills in shared/videos/stills and what they show (visual judgement, videos/SOURCE.txt).
STILL_NEUTRAL = "single_face_f0000.png"
STILL_SMILE = "single_face_f0036.png"


def shared_path(*parts: str) -> Path:
    """A path inside the shared folder; skips the calling test, saying what is missing, if it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} not found (set STREAM_FER_SHARED)")
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found in the shared data folder")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def stills(shared_dir) -> list[Path]:
    paths = sorted(shared_path("videos", "stills").glob("*.png"))
    if not paths:
        pytest.skip(f"no stills in {shared_dir / 'videos' / 'stills'}")
    return paths


@pytest.fixture(scope="session")
def landmarker_model() -> Path:
    """A verified face_landmarker.task: STREAM_FER_LANDMARKER or the user cache (what `stream-fer models
    fetch` fills), else the development copy in shared/models."""
    from stream_fer.errors import StreamFerError
    from stream_fer.model_files import resolve_landmarker

    try:
        return resolve_landmarker()
    except StreamFerError as exc:
        fallback = SHARED_DIR / "models" / "face_landmarker.task"
        if not fallback.is_file():
            pytest.skip(f"no face landmark model ({exc}; and no {fallback})")
        return resolve_landmarker(fallback)


@pytest.fixture(scope="session")
def landmarker(landmarker_model):
    """A real MediaPipe FaceLandmarker in IMAGE mode; max_faces=2 so a spurious second face shows up."""
    from stream_fer.landmarks import Landmarker

    with Landmarker(landmarker_model, mode="image", max_faces=2) as lm:
        yield lm


@dataclass(frozen=True)
class Still:
    path: Path
    rgb: np.ndarray
    faces: list  # list[FaceLandmarks]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def points(self) -> np.ndarray:
        return self.faces[0].points

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[1], self.rgb.shape[0]


@pytest.fixture(scope="session")
def detected_stills(stills, landmarker) -> dict[str, Still]:
    """Every still with the faces the landmarker found in it, computed once per session."""
    from stream_fer.images import read_rgb

    out = {}
    for path in stills:
        rgb = read_rgb(path)
        out[path.name] = Still(path, rgb, landmarker.detect(rgb))
    return out


def _one_still(detected_stills, name: str) -> Still:
    still = detected_stills.get(name)
    if still is None:
        pytest.skip(f"{name} not among the stills")
    assert len(still.faces) == 1, f"expected one face in {name}, found {len(still.faces)}"
    return still


@pytest.fixture(scope="session")
def smile(detected_stills) -> Still:
    """The frontal broad smile (single_face_f0036.png), with exactly one face."""
    return _one_still(detected_stills, STILL_SMILE)


@pytest.fixture(scope="session")
def neutral(detected_stills) -> Still:
    """The same man, neutral (single_face_f0000.png), with exactly one face."""
    return _one_still(detected_stills, STILL_NEUTRAL)


@pytest.fixture(scope="session")
def cli():
    """cli(*args, env=None): `stream-fer ARGS` in a fresh interpreter, as a user runs it; output captured.
    `env` entries override the environment; an entry whose value is None is removed from it."""

    def run(*args: str, env: dict[str, str | None] | None = None, timeout: float = 120):
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        return subprocess.run([sys.executable, "-m", "stream_fer.cli", *map(str, args)], check=False,
                              capture_output=True, text=True, env=full_env, cwd=REPO_ROOT, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def onnx_engine():
    """The default model on ONNX Runtime (CPU); skipped, with the reason, when it cannot be loaded."""
    try:
        from stream_fer.engines.select import load_engine
    except ImportError as exc:
        pytest.skip(f"engines.select is not available ({exc})")
    from stream_fer.errors import StreamFerError

    try:
        return load_engine(None, backend="onnxruntime")
    except StreamFerError as exc:
        pytest.skip(f"the default model cannot be loaded: {exc}")
