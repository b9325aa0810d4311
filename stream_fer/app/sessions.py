"""Analyzers for the app's visitors: each live stream (webcam, RTSP) of a browser session owns its own
analyzer, so one visitor's tracker, smoother and landmarker never see another's frames, and a busy
visitor never holds a lock another one waits on; photos are analysed by a small shared pool of image-mode
analyzers (nothing carries over between photos). Engines are loaded once per backend and shared; an
engine whose backend is not known to be safe to call from several threads at once is serialised behind a
lock. stream_fer.app.visitors decides when a visitor's sessions are released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_fer.app.settings import AnalysisSettings
from stream_fer.errors import StreamFerError
from stream_fer.frames import FrameResult

log = logging.getLogger(__name__)

# ONNX Runtime's InferenceSession.run may be called from several threads at once; the others
# (a TensorRT execution context, a torch module on one CUDA stream) are serialised.
_THREAD_SAFE_ENGINE_PREFIXES = ("onnxruntime",)


class _SerialisedEngine:
    """An engine behind a lock: same interface, one infer() at a time."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.name = engine.name
        self.info = engine.info

    def infer(self, faces):
        with self._lock:
            return self._engine.infer(faces)

    def __getattr__(self, item):  # anything else the wrapped engine offers (close, describe, ...)
        return getattr(self._engine, item)


class EnginePool:
    """One engine per requested backend, loaded on first use and shared by every session."""

    def __init__(self, model_dir: Path | None = None, loader: Callable | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self._model_dir = model_dir
        self._loader = loader
        self._report = report  # gets the backend selection lines (the CLI prints them)
        self._engines: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, backend: str = "auto"):
        with self._lock:
            engine = self._engines.get(backend)
            if engine is None:
                engine = self._load(backend)
                if not engine.name.startswith(_THREAD_SAFE_ENGINE_PREFIXES):
                    engine = _SerialisedEngine(engine)
                self._engines[backend] = engine
                log.info("app: backend %r -> engine %s", backend, engine.name)
            return engine

    def _load(self, backend: str):
        if self._loader is not None:
            return self._loader(model_dir=self._model_dir, backend=backend)
        from stream_fer.engines.select import load_engine

        return load_engine(self._model_dir, backend=backend, report=self._report)

    def loaded(self) -> dict[str, str]:
        """requested backend -> engine actually used, for the page's status line."""
        with self._lock:
            return {k: e.name for k, e in self._engines.items()}


class AnalyzerFactory:
    """Builds FrameAnalyzers the way the CLI does, from a visitor's settings. Shared by all sessions."""

    def __init__(self, engines: EnginePool, landmarker_path: Path | None = None, min_face: float = 40) -> None:
        self.engines = engines
        self.landmarker_path = landmarker_path
        self.min_face = min_face  # px: the smallest face looked for (stream_fer.api.DEFAULT_MIN_FACE)

    def create(self, settings: AnalysisSettings, mode: str = "video"):
        from stream_fer.analyzer import FrameAnalyzer

        return FrameAnalyzer(self.engines.get(settings.backend), landmarker_path=self.landmarker_path,
                             max_faces=settings.max_faces, smoothing=settings.smoothing,
                             smoothing_strength=settings.smoothing_strength,
                             overlays=overlay_options(settings.overlays), mode=mode, min_face=self.min_face)


def overlay_options(names: tuple[str, ...]):
    """OverlayOptions with exactly the named overlays switched on (names are OverlayOptions' boolean
    fields, as listed by overlay_choices())."""
    from dataclasses import fields

    from stream_fer.render import OverlayOptions

    flags = {f.name: (f.name in names) for f in fields(OverlayOptions) if isinstance(f.default, bool)}
    return OverlayOptions(**flags)


def overlay_choices() -> tuple[list[str], list[str]]:
    """(every overlay name, the ones on by default): OverlayOptions' boolean fields."""
    from dataclasses import fields

    from stream_fer.render import OverlayOptions

    names = [f.name for f in fields(OverlayOptions) if isinstance(f.default, bool)]
    return names, [f.name for f in fields(OverlayOptions) if isinstance(f.default, bool) and f.default]


@dataclass(frozen=True)
class Analysed:
    """One analysed frame, with what the explanation panel needs to redraw any of its faces."""

    rgb: np.ndarray  # the frame as received
    annotated: np.ndarray
    result: FrameResult
    crop_size: int
    class_names: tuple[str, ...]


class LiveAnalysis:
    """One visitor's live stream (the webcam view): the public stream_fer.Analyzer in video mode on the
    app's shared engine, rebuilt when the visitor's analysis settings change. Frames go through it one at
    a time, in order (tracks and smoothing depend on it); a pause of more than NEW_STREAM_GAP_S starts a
    new stream (fresh tracks and smoothing)."""

    NEW_STREAM_GAP_S = 2.0

    def __init__(self, factory: AnalyzerFactory) -> None:
        self._factory = factory
        self._analyzer = None
        self._settings: AnalysisSettings | None = None
        self._lock = threading.Lock()
        self._last_seen: float | None = None
        self.frames = 0

    @property
    def analyzer(self):
        """The current stream_fer.Analyzer (None before the first frame and after close)."""
        return self._analyzer

    def analyse(self, rgb: np.ndarray, settings: AnalysisSettings) -> tuple[FrameResult, int, tuple[str, ...]]:
        """(FrameResult, crop size, class names) for the stream's next frame."""
        import stream_fer

        rgb = as_rgb(rgb)
        with self._lock:
            if self._analyzer is None or settings != self._settings:
                self._close()
                self._analyzer = stream_fer.Analyzer(
                    engine=self._factory.engines.get(settings.backend), landmarker=self._factory.landmarker_path,
                    max_faces=settings.max_faces, smoothing=settings.smoothing,
                    smoothing_strength=settings.smoothing_strength, mode="video", min_face=self._factory.min_face)
                self._settings = settings
            now = time.monotonic()
            if self._last_seen is not None and now - self._last_seen > self.NEW_STREAM_GAP_S:
                self._analyzer.reset()
            self._last_seen = now
            result = self._analyzer.process(rgb)
            self.frames += 1
            return result, int(self._analyzer.engine.info.input_size), tuple(self._analyzer.class_names)

    def _close(self) -> None:
        if self._analyzer is not None:
            _close_analyzer(self._analyzer)
            self._analyzer = None

    def close(self) -> None:
        with self._lock:
            self._close()


class ImagePool:
    """Image-mode analyzers (stream_fer.Analyzer on the shared engine) shared by every visitor, kept per set
    of settings. A photo is analysed from scratch (the analyzer is reset before each one), so nothing of one
    visitor's photo reaches another's, and sharing them bounds memory by the number of photos analysed at
    once instead of the number of visitors. Each analyzer is used by one request at a time; at most `keep`
    idle ones are kept, the least recently used go first."""

    def __init__(self, factory: AnalyzerFactory, keep: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = factory
        self._keep = max(1, int(keep))
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[tuple[AnalysisSettings, object, float]] = []  # (settings, analyzer, idle since)
        self.created = 0

    def analyse(self, rgb: np.ndarray, settings: AnalysisSettings) -> Analysed:
        rgb = as_rgb(rgb)
        analyzer = self._take(settings)
        if analyzer is None:
            analyzer = self._create(settings)
            with self._lock:
                self.created += 1
        try:
            analyzer.reset()  # nothing of the previous photo carries over
            result, annotated = analyzer.process(rgb, timestamp=0.0, annotate=True)
            analysed = Analysed(rgb, annotated, result, int(analyzer.engine.info.input_size),
                                tuple(analyzer.class_names))
        except BaseException:
            _close_analyzer(analyzer)
            raise
        self._give_back(settings, analyzer)
        return analysed

    def _create(self, settings: AnalysisSettings):
        """The public API's analyzer in image mode, on the app's shared engine."""
        import stream_fer

        return stream_fer.Analyzer(engine=self._factory.engines.get(settings.backend),
                                   landmarker=self._factory.landmarker_path, max_faces=settings.max_faces,
                                   smoothing=settings.smoothing, smoothing_strength=settings.smoothing_strength,
                                   overlays=overlay_options(settings.overlays), mode="image",
                                   min_face=self._factory.min_face)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def _take(self, key: AnalysisSettings):
        with self._lock:
            for i, (k, analyzer, _since) in enumerate(self._idle):
                if k == key:
                    del self._idle[i]
                    return analyzer
        return None

    def _give_back(self, key: AnalysisSettings, analyzer) -> None:
        with self._lock:
            self._idle.append((key, analyzer, self._clock()))
            extra = self._idle[:-self._keep]
            del self._idle[:-self._keep]
        for _, old, _since in extra:
            _close_analyzer(old)

    def reap(self, idle_s: float, keep: int = 1) -> int:
        """Close analyzers unused for more than idle_s, keeping the `keep` most recently used: after a busy
        spell the pool shrinks back to one warm analyzer. How many were closed."""
        now = self._clock()
        with self._lock:
            old = [entry for entry in self._idle[:-keep or None] if now - entry[2] > idle_s]
            self._idle = [entry for entry in self._idle if entry not in old]
        for _, analyzer, _since in old:
            _close_analyzer(analyzer)
        return len(old)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, analyzer, _since in idle:
            _close_analyzer(analyzer)


def _close_analyzer(analyzer) -> None:
    try:
        analyzer.close()
    except Exception:  # closing must never take a visitor's request down
        log.exception("app: closing an analyzer failed")


def as_rgb(image) -> np.ndarray:
    """A contiguous (H, W, 3) uint8 RGB array from what the page sends (RGB, RGBA or grayscale)."""
    if image is None:
        raise StreamFerError("no image received")
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 2 or a.shape[1] < 2:
        raise StreamFerError(f"not an image: array of shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)
