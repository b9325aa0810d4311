"""A thin wrapper around MediaPipe's FaceLandmarker (Tasks API): RGB frames in, faces out."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.in_thread import InThread
from stream_fer.model_files import resolve_landmarker

log = logging.getLogger(__name__)

# MediaPipe 1.x writes start-up chatter straight to file descriptor 2: absl lines such as
# "W0000 00:00:... face_landmarker_graph.cc:181] ..." and "WARNING: Logging before InitGoogle() ...", and
# TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (LiteRT, which runs the face detector task:
# "INFO: [environment.cc:36] Creating LiteRT environment ..."). Its library exports no logging
# control and ignores GLOG_minloglevel, GOOGLE_STDERRTHRESHOLD and TF_CPP_MIN_LOG_LEVEL (mediapipe 1.2.2),
# so while a landmarker starts up (creation and first detection), fd 2 is routed through a pipe that
# drops exactly those info/warning lines and passes everything else (errors, other threads' output) on.
_NOISE = (rb"(?:[IW]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "  # absl INFO and WARNING lines
          rb"|WARNING: Logging before InitGoogle\(\)|INFO: \w+ TensorFlow Lite "
          rb"|INFO: \[[\w.]+:\d+\] )")  # LiteRT's INFO lines (the face detector task's runtime)
_NATIVE_NOISE = re.compile(rb"^" + _NOISE)
# Chatter written while another thread's line was half written (an error line whose newline had not reached the
# pipe yet, seen under load): the line is then that text followed by the chatter.
_NOISE_AFTER_TEXT = re.compile(_NOISE)


def _kept(line: bytes) -> bytes | None:
    """A line with MediaPipe's chatter left out: None when it is all chatter, the text before it when another
    writer's unfinished line ran into a chatter line, else the line itself."""
    if _NATIVE_NOISE.match(line):
        return None
    joined = _NOISE_AFTER_TEXT.search(line)
    return line if joined is None else line[:joined.start()]


class _NativeStderrFilter:
    """Process-wide, reference-counted: the first user installs the pipe on fd 2, the last restores fd 2."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._users = 0
        self._saved_fd: int | None = None
        self._pump: threading.Thread | None = None
        self._draining = False

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
            if self._users > 1 or sys.is_finalizing():  # at interpreter exit no thread can start for the pump
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
                if self._users == 0:
                    self._idle.notify_all()
                return
            _flush_python_stderr()
            os.dup2(self._saved_fd, 2)  # closes the pipe's writer: the pump drains what is left and stops
            self._saved_fd = None
            pump, self._pump = self._pump, None
            self._draining = True
        pump.join(timeout=2.0)
        with self._lock:
            self._draining = False
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no landmarker is starting up and what went through the pipe has reached the real fd 2.
        A process that is about to exit calls this after writing its last words (stream_fer.cli's error
        line): a landmarker still building in a thread would otherwise hold fd 2 on the pipe, and the
        daemon pump could die with the line in it."""
        with self._lock:
            return self._idle.wait_for(lambda: self._users == 0 and not self._draining, timeout)


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
                kept = (_kept(line) for line in lines)
                _write_all(out_fd, b"".join(line + b"\n" for line in kept if line is not None))
        if (rest := _kept(pending)) is not None:
            _write_all(out_fd, rest)
    except OSError:
        pass
    finally:
        os.close(out_fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


_native_stderr = _NativeStderrFilter()


def settle_native_stderr(timeout: float = 5.0) -> bool:
    """See _NativeStderrFilter.wait_idle: True when fd 2 is the real stderr again (or never was a pipe)."""
    _flush_python_stderr()
    return _native_stderr.wait_idle(timeout)


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


@contextlib.contextmanager
def _without_mediapipe_extras():
    """While MediaPipe is imported: its package imports every task, and with them matplotlib.pyplot (for
    drawing helpers this product never calls) and sounddevice (audio tasks): about 0.6 s of CPU, most of
    a run's start-up. Those two stand aside as placeholders (sounddevice as absent, which MediaPipe
    handles) and are removed afterwards, so a later `import matplotlib.pyplot` gets the real module."""
    import types

    placed: dict[str, object] = {}
    for name, stub in (("matplotlib", types.ModuleType("matplotlib")),
                       ("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot")), ("sounddevice", None)):
        if name not in sys.modules:
            placed[name] = sys.modules[name] = stub
    try:
        yield
    finally:
        for name, stub in placed.items():
            if sys.modules.get(name, 0) is stub:
                del sys.modules[name]


def _import_mediapipe():
    """MediaPipe, imported on first use (about 0.25 s of CPU without the extras it would pull in)."""
    if "mediapipe.tasks.python.vision" in sys.modules:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    else:
        with _without_mediapipe_extras():
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


class _ResultReader:
    """Reads MediaPipe's C result struct straight into numpy: one copy per face, instead of the Python API's
    one dataclass per landmark (478 per face, about a millisecond of GIL-held Python per frame). It calls
    the same C function the public `detect`/`detect_for_video` call, through the landmarker's `_lib` and
    `_handle` (mediapipe 1.2.x, pinned); `available()` is False on a MediaPipe without them, and the
    Landmarker then uses the public API. tests/test_landmarks.py checks both give the same faces."""

    def __init__(self, landmarker) -> None:
        self._landmarker = landmarker
        self._names: dict[int, str] = {}
        try:
            from mediapipe.tasks.python.components.containers import category_c, landmark_c
            from mediapipe.tasks.python.vision import face_landmarker as fl

            lm, cat = landmark_c.MpNormalizedLandmarkC, category_c.MpCategoryC
            self._point_dtype = np.dtype({"names": ["x", "y", "z"], "formats": [np.float32] * 3,
                                          "offsets": [lm.x.offset, lm.y.offset, lm.z.offset],
                                          "itemsize": ctypes.sizeof(lm)})
            self._category_dtype = np.dtype({"names": ["index", "score"], "formats": [np.int32, np.float32],
                                             "offsets": [cat.index.offset, cat.score.offset],
                                             "itemsize": ctypes.sizeof(cat)})
            self._result_type = fl.MpFaceLandmarkerResultC
            self._lib = landmarker._lib
            self._ok = hasattr(landmarker, "_handle") and all(
                hasattr(self._lib, f) for f in ("MpFaceLandmarkerDetectImage", "MpFaceLandmarkerDetectForVideo",
                                                "MpFaceLandmarkerCloseResult"))
        except (ImportError, AttributeError):
            self._ok = False

    def available(self) -> bool:
        return self._ok

    def detect(self, image, timestamp_ms: int | None) -> list[tuple[np.ndarray, dict[str, float]]]:
        """[(normalised points (n, 3) float32, {blendshape: score}), ...] for one image."""
        result = self._result_type()
        handle, c_image = self._landmarker._handle, image._image_ptr
        if timestamp_ms is None:
            self._lib.MpFaceLandmarkerDetectImage(handle, c_image, None, ctypes.byref(result))
        else:
            self._lib.MpFaceLandmarkerDetectForVideo(handle, c_image, None, timestamp_ms, ctypes.byref(result))
        try:
            faces = []
            for i in range(result.face_landmarks_count):
                marks = result.face_landmarks[i]
                raw = self._array(marks.landmarks, marks.landmarks_count, self._point_dtype)
                points = np.stack([raw["x"], raw["y"], raw["z"]], axis=1)
                shapes = {}
                if i < result.face_blendshapes_count:
                    shapes = self._blendshapes(result.face_blendshapes[i])
                faces.append((points, shapes))
            return faces
        finally:
            self._lib.MpFaceLandmarkerCloseResult(ctypes.byref(result))

    @staticmethod
    def _array(pointer, count: int, dtype: np.dtype) -> np.ndarray:
        if not count:
            return np.zeros(0, dtype=dtype)
        buffer = (ctypes.c_char * (count * dtype.itemsize)).from_address(ctypes.addressof(pointer.contents))
        return np.frombuffer(buffer, dtype=dtype).copy()  # a copy: the C result is freed after reading

    def _blendshapes(self, categories) -> dict[str, float]:
        raw = self._array(categories.categories, categories.categories_count, self._category_dtype)
        for j, index in enumerate(raw["index"].tolist()):
            if index not in self._names:  # names are fixed per index: read the C strings once
                self._names[index] = categories.categories[j].category_name.decode()
        return {self._names[index]: score for index, score in zip(raw["index"].tolist(), raw["score"].tolist())}


class Landmarker:
    """MediaPipe FaceLandmarker in IMAGE mode (independent images) or VIDEO mode (a timed sequence,
    which tracks faces between frames and is faster).

    `min_face` (px of face height; 0: off) adds the faces the whole-frame detector is too coarse for, down to
    that size (stream_fer.discovery.SmallFaceSearch); it costs nothing on frames small enough for the
    whole-frame pass to see such faces, or while that pass alone finds max_faces faces."""

    def __init__(self, model_path=None, mode: str = "image", max_faces: int = 1,
                 min_detection_confidence: float = 0.5, min_face: float = 0):
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', not {mode!r}")
        if min_face < 0:
            raise StreamFerError(f"min_face must be >= 0 px (0 turns the small-face search off), not {min_face}")
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
        self._search = None
        try:
            with _native_stderr.active():
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except Exception as exc:  # a file with the right name but the wrong content
            raise StreamFerError(f"could not load the face landmark model {path}: {exc}") from None
        self._last_ts = -1
        self._started = False  # the first detection may still log start-up chatter
        self._reader = _ResultReader(self._landmarker)
        if not self._reader.available():
            log.debug("MediaPipe's C result struct is not readable here; using its Python result objects")
        self.max_faces = max_faces
        self.min_face = float(min_face)
        if self.min_face:
            from stream_fer.discovery import SmallFaceSearch  # it builds on this module

            self._search = SmallFaceSearch(path, self.min_face, video=mode == "video",
                                           min_detection_confidence=min_detection_confidence)

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceLandmarks]:
        """Faces in an RGB uint8 image (H, W, 3). VIDEO mode needs increasing timestamps; equal or
        decreasing ones are nudged forward so a stuttering source never raises."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an RGB uint8 image of shape (H, W, 3)")
        if self._landmarker is None:
            raise RuntimeError("the landmarker is closed")
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        ts = None
        if self.mode == "video":
            ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts + 33)
            ts = max(ts, self._last_ts + 1)
            self._last_ts = ts
        with contextlib.nullcontext() if self._started else _native_stderr.active():
            raw = self._reader.detect(image, ts) if self._reader.available() else self._detect_public(image, ts)
        self._started = True
        h, w = rgb.shape[:2]
        scale = np.float32((w, h, w))
        faces = [FaceLandmarks(points * scale, shapes) for points, shapes in raw]
        if self._search is not None:
            faces = self._search.extend(rgb, faces, self.max_faces)
        return faces

    @property
    def search_stats(self) -> dict[str, float]:
        """What the small-face search did so far (frames it ran on, tiles scanned, faces followed, found,
        lost, and the milliseconds it took); empty where it is off."""
        return dict(self._search.stats) if self._search is not None else {}

    def _detect_public(self, image, ts: int | None) -> list[tuple[np.ndarray, dict[str, float]]]:
        """The same as _ResultReader.detect through MediaPipe's public API (one object per landmark)."""
        result = self._landmarker.detect(image) if ts is None else self._landmarker.detect_for_video(image, ts)
        faces = []
        for i, marks in enumerate(result.face_landmarks):
            points = np.array([(p.x, p.y, p.z) for p in marks], dtype=np.float32)
            shapes = result.face_blendshapes[i] if result.face_blendshapes else []
            faces.append((points, {c.category_name: float(c.score) for c in shapes}))
        return faces

    def close(self) -> None:
        if self._search is not None:
            self._search.close()
            self._search = None
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


def _load_key(model_path=None, **settings) -> tuple:
    """Landmarker's arguments with its own defaults filled in: two loads with equal keys build the same."""
    import inspect

    bound = inspect.signature(Landmarker).bind(None if model_path is None else str(model_path), **settings)
    bound.apply_defaults()
    return tuple(bound.arguments.items())


class LandmarkerLoad(InThread):
    """A Landmarker being built in a daemon thread (MediaPipe's import and graph set-up, about 0.3 s, mostly
    native work that leaves the GIL free), so the caller can open its input and load its engine meanwhile.
    Arguments as Landmarker's."""

    def __init__(self, model_path=None, **settings) -> None:
        self.key = _load_key(model_path, **settings)
        super().__init__(lambda: Landmarker(model_path, **settings), name="landmarker-load")

    @classmethod
    def reuse(cls, started: LandmarkerLoad | None, model_path=None, **settings) -> LandmarkerLoad:
        """`started` if it was started with these settings; else a new load, and `started` is abandoned."""
        if started is not None and started.key == _load_key(model_path, **settings):
            return started
        if started is not None:
            started.abandon()
        return cls(model_path, **settings)
