"""A thin wrapper around MediaPipe's FaceLandmarker (Tasks API): RGB frames in, faces out."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.model_files import resolve_landmarker

log = logging.getLogger(__name__)

# MediaPipe 1.x writes start-up chatter straight to file descriptor 2: absl lines such as
# "W0000 00:00:... face_landmarker_graph.cc:181] ..." and "WARNING: Logging before InitGoogle() ...", and
# TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.". Its library exports no logging
# control and ignores GLOG_minloglevel, GOOGLE_STDERRTHRESHOLD and TF_CPP_MIN_LOG_LEVEL (mediapipe 1.2.2),
# so while a landmarker starts up (creation and first detection), fd 2 is routed through a pipe that
# drops exactly those info/warning lines and passes everything else (errors, other threads' output) on.
_NATIVE_NOISE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "  # absl INFO and WARNING lines
                           rb"|WARNING: Logging before InitGoogle\(\)|INFO: \w+ TensorFlow Lite )")


class _NativeStderrFilter:
    """Process-wide, reference-counted: the first user installs the pipe on fd 2, the last restores fd 2."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved_fd: int | None = None
        self._pump: threading.Thread | None = None

    @contextlib.contextmanager
    def active(self):
        self._enter()
        try:
            yield
        finally:
            self._exit()

    def _enter(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            try:
                _flush_python_stderr()
                saved = os.dup(2)
            except OSError:  # no usable fd 2 (a daemon, a closed stderr): nothing to filter
                return
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)  # fd 2 is now the pipe's only writer
            self._saved_fd = saved
            self._pump = threading.Thread(target=_pump, args=(read_fd, saved), name="mediapipe-stderr",
                                          daemon=True)
            self._pump.start()

    def _exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._saved_fd is None:
                return
            _flush_python_stderr()
            os.dup2(self._saved_fd, 2)  # closes the pipe's writer: the pump drains what is left and stops
            self._saved_fd = None
            pump, self._pump = self._pump, None
        pump.join(timeout=2.0)


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()


def _pump(read_fd: int, out_fd: int) -> None:
    """Copy lines from read_fd to out_fd, leaving out MediaPipe's start-up chatter; owns both fds."""
    pending = b""
    try:
        with open(read_fd, "rb", buffering=0, closefd=True) as reader:
            while chunk := reader.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _NATIVE_NOISE.match(line))
                _write_all(out_fd, kept)
        if not _NATIVE_NOISE.match(pending):
            _write_all(out_fd, pending)
    except OSError:
        pass
    finally:
        os.close(out_fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


_native_stderr = _NativeStderrFilter()


@dataclass(frozen=True)
class FaceLandmarks:
    """One face: 478 mesh points in pixel coordinates (x, y, z; z in the units of x), blendshape scores."""

    points: np.ndarray  # (478, 3) float32
    blendshapes: dict[str, float]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the bounds of the mesh."""
        xy = self.points[:, :2]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def _import_mediapipe():
    """MediaPipe, imported on first use (it takes about 0.7 s)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    # mediapipe keeps the error of its optional `sounddevice` import (no PortAudio here) in a module
    # global, and with it a traceback through every frame that was importing mediapipe: the frame of the
    # first Landmarker.__init__, and so that landmarker and its native graph, would never be freed.
    audio_record = sys.modules.get("mediapipe.tasks.python.audio.core.audio_record")
    error = getattr(audio_record, "sd_error", None)
    if isinstance(error, BaseException):
        error.__traceback__ = None
    return mp, BaseOptions, vision


class Landmarker:
    """MediaPipe FaceLandmarker in IMAGE mode (independent images) or VIDEO mode (a timed sequence,
    which tracks faces between frames and is faster)."""

    def __init__(self, model_path=None, mode: str = "image", max_faces: int = 1,
                 min_detection_confidence: float = 0.5):
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', not {mode!r}")
        path = resolve_landmarker(model_path)
        mp, BaseOptions, vision = _import_mediapipe()
        self._mp = mp
        self.mode = mode
        running_mode = vision.RunningMode.IMAGE if mode == "image" else vision.RunningMode.VIDEO
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=running_mode,
            num_faces=max_faces,
            min_face_detection_confidence=min_detection_confidence,
            output_face_blendshapes=True,
        )
        self._landmarker = None
        try:
            with _native_stderr.active():
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except Exception as exc:  # a file with the right name but the wrong content
            raise StreamFerError(f"could not load the face landmark model {path}: {exc}") from None
        self._last_ts = -1
        self._started = False  # the first detection may still log start-up chatter

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceLandmarks]:
        """Faces in an RGB uint8 image (H, W, 3). VIDEO mode needs increasing timestamps; equal or
        decreasing ones are nudged forward so a stuttering source never raises."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an RGB uint8 image of shape (H, W, 3)")
        if self._landmarker is None:
            raise RuntimeError("the landmarker is closed")
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self.mode == "image":
            call, args = self._landmarker.detect, (image,)
        else:
            ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts + 33)
            ts = max(ts, self._last_ts + 1)
            self._last_ts = ts
            call, args = self._landmarker.detect_for_video, (image, ts)
        with contextlib.nullcontext() if self._started else _native_stderr.active():
            result = call(*args)
        self._started = True
        h, w = rgb.shape[:2]
        faces = []
        for i, marks in enumerate(result.face_landmarks):
            pts = np.array([(p.x, p.y, p.z) for p in marks], dtype=np.float32) * np.float32((w, h, w))
            shapes = result.face_blendshapes[i] if result.face_blendshapes else []
            faces.append(FaceLandmarks(pts, {c.category_name: float(c.score) for c in shapes}))
        return faces

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # MediaPipe's own finaliser can fail at interpreter exit; close early instead
        try:
            self.close()
        except Exception:
            pass
