"""The app's event handlers as plain functions: values in, values out, no gradio. stream_fer.app.app
binds them to components; tests call them directly on real frames.

Every handler runs the same per-frame analysis as the CLI (FrameAnalyzer.analyze); the file and RTSP
handlers run the CLI's own pipeline (run_pipeline with its sources and sinks). Per-visitor objects
(LiveSession, ImageSession, RtspSession) travel in the page's per-session state, so visitors never
share an analyzer.

The panels a handler returns are always, in this order: probability bars (dict), explanation image,
summary (Markdown), blendshape scores (dict), attention share per AU region (dict).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from stream_fer.app.panels import FacePanels, face_panels
from stream_fer.app.sessions import AnalyzerFactory, ImageSession, LiveSession
from stream_fer.app.settings import AnalysisSettings, AppConfig, check_uploaded
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

PANEL_COUNT = 5


def panel_values(panels: FacePanels) -> tuple:
    """A FacePanels as the five component values (None clears a component)."""
    return (panels.probs or None, panels.explanation, panels.summary, panels.blendshapes or None,
            panels.au_share or None)


class AppHandlers:
    """Handlers bound to one server's configuration and its shared analyzer factory.

    `skip` is what a handler returns for an output that should not change (gradio's gr.skip());
    `explain(face, rgb, crop_size, class_names, tile) -> image` draws a face's explanation panel (default:
    the renderer's explanation_panel)."""

    def __init__(self, config: AppConfig, factory: AnalyzerFactory, skip: Callable[[], object] | None = None,
                 explain: Callable | None = None) -> None:
        self.config = config
        self.factory = factory
        self._skip = skip or (lambda: None)
        self._explain = explain if explain is not None else default_explain

    # ----------------------------------------------------------------------------------- helpers

    def _skips(self, n: int = 1 + PANEL_COUNT) -> tuple:
        """`skip` for a frame and its panels: the page keeps showing what it shows."""
        return tuple(self._skip() for _ in range(n))

    def _panels(self, analysed, selected, tile: int = 160) -> tuple:
        if analysed is None:
            return panel_values(face_panels(None))

        def explain(face):
            return self._explain(face, analysed.rgb, analysed.crop_size, analysed.class_names, tile)

        return panel_values(face_panels(analysed.result, selected, analysed.class_names, explain))

    # ------------------------------------------------------------------------------------ webcam

    def new_live_session(self) -> LiveSession:
        return LiveSession(self.factory)

    def webcam(self, frame, session: LiveSession | None, backend, max_faces, smoothing, strength, overlays,
               selected) -> tuple:
        """One webcam frame -> (session, annotated frame, *panels). A frame that arrives while this
        session's previous frame is still being analysed is dropped: every output is `skip`."""
        if frame is None:
            return (session, *self._skips())
        session = session if isinstance(session, LiveSession) else self.new_live_session()
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        analysed = session.step(frame, settings)
        if analysed is None:
            return (session, *self._skips())
        return (session, analysed.annotated) + self._panels(analysed, selected)

    # ------------------------------------------------------------------------------------- image

    def image(self, rgb, session: ImageSession | None, backend, max_faces, smoothing, strength, overlays,
              selected) -> tuple:
        """A photo -> (session, annotated photo, *panels). The photo is what gradio decoded from the
        visitor's upload, never a path."""
        if rgb is None:
            raise StreamFerError("upload a photo first")
        session = session if isinstance(session, ImageSession) else ImageSession(self.factory)
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        analysed = session.analyse(rgb, settings)
        return (session, analysed.annotated) + self._panels(analysed, selected, tile=256)

    # -------------------------------------------------------------------------------------- file

    def video(self, path, backend, max_faces, smoothing, strength, overlays,
              progress: Callable[[int, int | None], None] | None = None) -> tuple:
        """An uploaded video -> (annotated video path, CSV path, timeline table, summary). Runs the CLI's
        pipeline: every frame, in order, written to an H.264 file and a CSV."""
        from stream_fer.app.jobs import annotate_video, new_job_dir

        video = check_uploaded(path, "video")
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        job = annotate_video(video, new_job_dir(), self.factory, settings, progress=progress,
                             max_frames=self.config.max_video_frames)
        return str(job.video), str(job.csv), job.timeline, job.summary

    # -------------------------------------------------------------------------------------- RTSP

    def rtsp_start(self, url, session, backend, max_faces, smoothing, strength, overlays) -> tuple:
        """(session, status): starts reading the stream in the background; the timer then polls."""
        from stream_fer.app.jobs import RtspSession

        if isinstance(session, RtspSession):
            session.stop()
        settings = AnalysisSettings.from_controls(backend, max_faces, smoothing, strength, overlays)
        session = RtspSession(url, self.factory, settings)  # checks the URL before anything connects
        session.start()
        return session, session.status()

    def rtsp_poll(self, session, selected) -> tuple:
        """(annotated frame, *panels, status, keep polling): the newest analysed frame, or `skip` for
        the images when nothing new arrived since the last poll."""
        from stream_fer.app.jobs import RtspSession

        if not isinstance(session, RtspSession):
            return (*self._skips(), "Not started.", False)
        analysed = session.take_new()
        status, running = session.status(), session.running
        if analysed is None:
            return (*self._skips(), status, running)
        return (analysed.annotated, *self._panels(analysed, selected), status, running)

    def rtsp_stop(self, session) -> tuple:
        from stream_fer.app.jobs import RtspSession

        if isinstance(session, RtspSession):
            session.stop()
            return session, session.status()
        return session, "Not started."


def default_explain(face, rgb: np.ndarray, crop_size: int, class_names: tuple[str, ...],
                    tile: int = 192) -> np.ndarray:
    """The renderer's explanation panel for one face (attention, CAM and AU map of the predicted class,
    attention share per AU), drawn from the frame as received."""
    from stream_fer.render import explanation_panel

    return explanation_panel(rgb, face, crop_size, tile=tile, class_names=class_names)


def close_session(value) -> None:
    """gr.State's delete_callback: release what a visitor's session held (analyzer, stream thread)."""
    close = getattr(value, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("app: closing a session failed")
