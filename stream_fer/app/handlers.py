"""The app's event handlers as plain functions: values in, values out, no gradio. stream_fer.app.app
binds them to components; tests call them directly on real frames.

Every handler runs the same per-frame analysis as the CLI and the public API (stream_fer.Analyzer for the
live view, FrameAnalyzer for photos); the file and RTSP handlers run the CLI's own pipeline (run_pipeline
with its sources and sinks). Live streams (LiveAnalysis, RtspSession) belong to one visitor (a live view's
websocket, or Gradio's session hash) and are kept by the app's Visitors registry, which releases them when
the visitor leaves or goes idle and caps how many visitors hold one; photos go to a small shared pool of
image-mode analyzers.

The panels a handler returns are always, in this order: probability bars (dict), explanation image,
summary (Markdown), blendshape scores (dict), attention share per AU region (dict).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np

from stream_fer.app.panels import FacePanels, face_panels
from stream_fer.app.sessions import AnalyzerFactory, ImagePool, LiveAnalysis
from stream_fer.app.settings import AnalysisSettings, AppConfig, check_uploaded
from stream_fer.app.visitors import Visitors, release_memory
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)


def panel_values(panels: FacePanels) -> tuple:
    """A FacePanels as the five component values (None clears a component)."""
    return (panels.probs or None, panels.explanation, panels.summary, panels.blendshapes or None,
            panels.au_share or None)


class AppHandlers:
    """Handlers bound to one server's configuration and its shared analyzer factory.

    `explain(face, rgb, crop_size, class_names, tile) -> image` draws a face's explanation panel (default:
    the renderer's explanation_panel)."""

    def __init__(self, config: AppConfig, factory: AnalyzerFactory, explain: Callable | None = None) -> None:
        self.config = config
        self.factory = factory
        self.visitors = Visitors(config.max_sessions, config.session_idle_s)
        self.images = ImagePool(factory, keep=config.image_analyzers)
        self._rtsp_tokens: dict[str, str] = {}  # watch token -> visitor (the drawn RTSP view)
        self._tokens_lock = threading.Lock()  # guards both dicts (handlers run in several threads)
        # visitor -> the last stopped stream's final status line: a status poll already queued when Stop was
        # clicked answers with it instead of overwriting "Stopped ..." with "Not started." (a few, newest kept)
        self._rtsp_final: dict[str, str] = {}
        # after a busy spell the photo pool shrinks back to one warm analyzer
        self.visitors.add_chore(lambda: self.images.reap(config.session_idle_s))
        self._explain = explain if explain is not None else default_explain

    def leave(self, visitor: str | None) -> None:
        """The visitor closed the page (or its client went away): release its live sessions."""
        if visitor:
            self.visitors.leave(visitor)

    def close(self) -> None:
        """The server is stopping: release every session and the shared photo analyzers."""
        self.visitors.close_all()
        self.images.close()

    # ----------------------------------------------------------------------------------- helpers

    def _panels(self, analysed, selected, tile: int = 160) -> tuple:
        if analysed is None:
            return panel_values(face_panels(None))

        def explain(face):
            return self._explain(face, analysed.rgb, analysed.crop_size, analysed.class_names, tile)

        return panel_values(face_panels(analysed.result, selected, analysed.class_names, explain))

    # ------------------------------------------------------------------------------------ webcam

    def admit_live(self, visitor: str) -> None:
        """Give a new live view its session now (or refuse it: AppBusy), before its first frame."""
        with self.visitors.lease(visitor, "live", lambda: LiveAnalysis(self.factory)):
            pass

    def live(self, rgb, visitor: str, settings: AnalysisSettings, frame_id: int = 0, dropped: int = 0) -> dict:
        """One frame of a visitor's live view -> its compact result for the page to draw
        (stream_fer.app.live.frame_json): frames of one visitor go through its own analyzer, in order."""
        from stream_fer.app.live import frame_json

        t0 = time.perf_counter()
        with self.visitors.lease(visitor, "live", lambda: LiveAnalysis(self.factory)) as live:
            result, crop_size, class_names = live.analyse(rgb, settings)
        h, w = np.asarray(rgb).shape[:2]
        return frame_json(result, w, h, class_names, crop_size, frame_id, dropped,
                          (time.perf_counter() - t0) * 1000.0)

    # ------------------------------------------------------------------------------------- image

    def image(self, rgb, backend, max_faces, smoothing, strength, overlays, selected) -> tuple:
        """A photo -> (annotated photo, *panels). The photo is what gradio decoded from the visitor's
        upload, never a path."""
        if rgb is None:
            raise StreamFerError("upload a photo first")
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        analysed = self.images.analyse(rgb, settings)
        return (analysed.annotated,) + self._panels(analysed, selected, tile=256)

    # -------------------------------------------------------------------------------------- file

    def video(self, path, backend, max_faces, smoothing, strength, overlays,
              progress: Callable[[int, int | None], None] | None = None) -> tuple:
        """An uploaded video -> (annotated video path, CSV path, timeline table, summary). Runs the CLI's
        pipeline: every frame, in order, written to an H.264 file and a CSV."""
        from stream_fer.app.jobs import annotate_video, new_job_dir

        video = check_uploaded(path, "video")
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        try:
            job = annotate_video(video, new_job_dir(), self.factory, settings, progress=progress,
                                 max_frames=self.config.max_video_frames)
        finally:
            release_memory()  # the job's analyzer, decoder and encoder are gone: give their memory back
        return str(job.video), str(job.csv), job.timeline, job.summary

    # -------------------------------------------------------------------------------------- RTSP

    def rtsp_start(self, url, visitor: str, backend, max_faces, smoothing, strength, overlays) -> str:
        """Starts reading the visitor's stream in the background (a running one of that visitor stops
        first); the status line. The page's timer then polls."""
        from stream_fer.app.jobs import RtspSession

        self.visitors.end(visitor, "rtsp")
        with self._tokens_lock:
            self._rtsp_final.pop(visitor, None)
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        stream = RtspSession(url, self.factory, settings)  # checks the URL before anything connects

        def started():
            stream.start()
            return stream

        with self.visitors.lease(visitor, "rtsp", started) as session:
            return session.status()

    def rtsp_watch_token(self, visitor: str) -> str:
        """A token the page's drawn RTSP view gives the watch websocket to receive this visitor's analysed
        frames ("" when the visitor has no stream). Tokens of streams that are gone are forgotten."""
        if self.visitors.peek(visitor, "rtsp") is None:
            return ""
        with self._tokens_lock:
            for token, owner in list(self._rtsp_tokens.items()):
                if owner == visitor or self.visitors.peek(owner, "rtsp") is None:
                    del self._rtsp_tokens[token]
            token = uuid.uuid4().hex
            self._rtsp_tokens[token] = visitor
        return token

    def rtsp_watched(self, token: str):
        """The RTSP session a watch token stands for, or None."""
        with self._tokens_lock:
            visitor = self._rtsp_tokens.get(token or "")
        return None if visitor is None else self.visitors.peek(visitor, "rtsp")

    def rtsp_status(self, visitor: str) -> tuple[str, bool]:
        """(status line, still running) of the visitor's stream, for the page's status timer."""
        session = self.visitors.peek(visitor, "rtsp")
        if session is None:
            with self._tokens_lock:
                return self._rtsp_final.get(visitor, "Not started."), False
        self.visitors.touch(visitor)
        return session.status(), session.running

    def rtsp_stop(self, visitor: str) -> str:
        """Stops the visitor's stream and releases it; the final status line."""
        session = self.visitors.peek(visitor, "rtsp")
        if session is None:
            return "Not started."
        session.stop()
        status = session.status()
        with self._tokens_lock:
            self._rtsp_final[visitor] = status
            while len(self._rtsp_final) > 64:
                self._rtsp_final.pop(next(iter(self._rtsp_final)))
        self.visitors.end(visitor, "rtsp")
        return status


def default_explain(face, rgb: np.ndarray, crop_size: int, class_names: tuple[str, ...],
                    tile: int = 192) -> np.ndarray:
    """The renderer's explanation panel for one face (attention, CAM and AU map of the predicted class,
    attention share per AU), drawn from the frame as received."""
    from stream_fer.render import explanation_panel

    return explanation_panel(rgb, face, crop_size, tile=tile, class_names=class_names)
