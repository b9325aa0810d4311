"""Shared fixtures: the sample clip shipped in the package and stills taken from it, the development data
folder (../shared), and one real MediaPipe landmarker.

Tests that need a real face use the shipped sample (stream_fer/data/sample.mp4), so they run on a fresh clone.
Tests that need ../shared itself (FER+, the long or special clips) take the `shared_dir` fixture (or one built
on it) and are skipped, with the reason, where the folder is absent. STREAM_FER_SHARED overrides its location.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stream_fer.samples import SAMPLE_VIDEO
from stream_fer.train.paths import shared_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = shared_dir()

# Stills taken from the shipped sample clip (frame index in the name) and what they show (MediaPipe's
# mouthSmile blendshapes and the shipped model agree): a hand at the mouth, not smiling; a broad smile; a laugh.
STILL_NEUTRAL = "sample_f0004.png"
STILL_SMILE = "sample_f0040.png"
STILL_LAUGH = "sample_f0084.png"
SAMPLE_STILL_FRAMES = (4, 40, 84)
SAMPLE_FACE_EVERY = 4  # sample_faces_dir: every 4th frame of the sample (24 real faces of one person)


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


def _write_sample_frames(folder: Path, keep) -> list[Path]:
    """The sample clip's frames whose index `keep` accepts, as lossless PNGs named sample_fNNNN.png."""
    import av

    from stream_fer.images import write_rgb

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with av.open(str(SAMPLE_VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if keep(index):
                path = folder / f"sample_f{index:04d}.png"
                write_rgb(path, frame.to_ndarray(format="rgb24"))
                paths.append(path)
    return paths


@pytest.fixture(scope="session")
def sample_video() -> Path:
    """The sample clip shipped in the package: 96 frames, 640x360, 23.976 fps, H.264 + AAC stereo; one
    woman, left of centre: a hand at her mouth (neutral), then a smile, then a laugh."""
    assert SAMPLE_VIDEO.is_file(), f"the shipped sample clip is missing: {SAMPLE_VIDEO}"
    return SAMPLE_VIDEO


@pytest.fixture(scope="session")
def sample_faces_dir(sample_video, tmp_path_factory) -> Path:
    """Every 4th frame of the sample clip as a PNG, for checks that want many real faces."""
    folder = tmp_path_factory.mktemp("sample-faces")
    _write_sample_frames(folder, lambda i: i % SAMPLE_FACE_EVERY == 0)
    return folder


@pytest.fixture(scope="session")
def stills(sample_video, tmp_path_factory) -> list[Path]:
    """The sample's three stills (neutral, smile, laugh: in that order, so stills[0] is the same everywhere),
    then the shared stills where ../shared is present (more people and expressions; none is required)."""
    paths = _write_sample_frames(tmp_path_factory.mktemp("stills"), lambda i: i in SAMPLE_STILL_FRAMES)
    shared_stills = SHARED_DIR / "videos" / "stills"
    if shared_stills.is_dir():
        paths += sorted(shared_stills.glob("*.png"))
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
    """The sample's broad, frontal smile (frame 40), with exactly one face."""
    return _one_still(detected_stills, STILL_SMILE)


@pytest.fixture(scope="session")
def neutral(detected_stills) -> Still:
    """The same woman, not smiling, a hand at her mouth (sample frame 4), with exactly one face."""
    return _one_still(detected_stills, STILL_NEUTRAL)


@pytest.fixture(scope="session")
def laugh(detected_stills) -> Still:
    """The same woman laughing, mouth open (sample frame 84), with exactly one face."""
    return _one_still(detected_stills, STILL_LAUGH)


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
