"""What the app is configured with (once, at start) and what a visitor chooses (per request), plus the
checks on everything a visitor sends: uploaded files must be Gradio's own temp files and stream URLs
must be rtsp://."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from stream_fer.errors import StreamFerError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 200
MAX_FACES_LIMIT = 8
DEFAULT_MAX_SESSIONS = 8  # each live session holds a MediaPipe graph (about 25 MB) and its tracks
DEFAULT_SESSION_IDLE_S = 60.0  # a live page sends frames or polls several times a second
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")  # as `stream-fer run --backend` offers them


@dataclass(frozen=True)
class AppConfig:
    """Fixed for the life of the server."""

    backend: str = "auto"  # the default backend offered in the page
    model_dir: Path | None = None  # None: the shipped default model
    landmarker_path: Path | None = None  # None: resolved as the CLI resolves it
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    backends: tuple[str, ...] = BACKENDS  # offered in the page
    rtsp_poll_s: float = 1.0  # how often the RTSP status line refreshes (frames come over the watch socket)
    max_video_frames: int | None = None  # refuse longer uploads (None: no limit beyond the size limit)
    max_sessions: int = DEFAULT_MAX_SESSIONS  # visitors holding a live stream at once; the next one is told "busy"
    session_idle_s: float = DEFAULT_SESSION_IDLE_S  # a live session with no frame or poll for this long is released
    image_analyzers: int = 4  # image-mode analyzers kept for photos, shared by every visitor


@dataclass(frozen=True)
class AnalysisSettings:
    """The controls a visitor sets. An analyzer is rebuilt only when these change."""

    backend: str = "auto"
    max_faces: int = 1
    smoothing: str = "ema"
    smoothing_strength: float = 0.6
    overlays: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_controls(cls, backend, max_faces, smoothing, smoothing_strength, overlays) -> AnalysisSettings:
        """From raw control values (strings, floats, lists from the page), clamped to what is allowed."""
        try:
            faces = int(max_faces if max_faces is not None else 1)
        except (TypeError, ValueError):
            faces = 1
        try:
            strength = float(smoothing_strength if smoothing_strength is not None else 0.6)
        except (TypeError, ValueError):
            strength = 0.6
        return cls(backend=str(backend or "auto"), max_faces=min(max(faces, 1), MAX_FACES_LIMIT),
                   smoothing=str(smoothing or "ema"), smoothing_strength=min(max(strength, 0.0), 1.0),
                   overlays=tuple(sorted(str(o) for o in (overlays or ()))))


def check_rtsp_url(url: str | None) -> str:
    """The URL stripped, if it is rtsp:// (or rtsps://) with a host; else a one-line StreamFerError."""
    text = (url or "").strip()
    if not text:
        raise StreamFerError("paste an rtsp:// URL first")
    if any(c in text for c in "\r\n\t ") or len(text) > 2048:
        raise StreamFerError("the stream URL contains spaces or control characters")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("rtsp", "rtsps"):
        raise StreamFerError(f"only rtsp:// stream URLs are accepted, not {parts.scheme or 'a bare path'}")
    if not parts.hostname:
        raise StreamFerError("the rtsp:// URL has no host")
    return text


def upload_root() -> Path:
    """Where Gradio keeps uploaded files (GRADIO_TEMP_DIR, else <tmp>/gradio): the only place the app
    reads a visitor's file from."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def check_uploaded(path, what: str = "file") -> Path:
    """`path` if it is a regular file inside Gradio's upload folder; a StreamFerError otherwise. Gradio
    already refuses payloads that name files outside its cache; this is the app's own second check, so no
    handler ever opens a path a visitor typed."""
    if not path:
        raise StreamFerError(f"upload a {what} first")
    p = Path(str(path)).resolve()
    root = upload_root()
    if not p.is_relative_to(root):
        raise StreamFerError(f"the {what} is not an upload of this page")
    if not p.is_file():
        raise StreamFerError(f"the uploaded {what} is gone; upload it again")
    return p
