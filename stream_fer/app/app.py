"""The Gradio page: four tabs (Webcam, RTSP, File, Image) over AppHandlers, and `serve()` to run it.

This is the only module that imports gradio. Layout and wiring only: every value shown comes from
stream_fer.app.handlers, which runs the CLI's own per-frame analysis and pipeline. The Webcam tab is the
live view that the page draws itself (static/live.js over the live websocket, stream_fer.app.live); its
routes are given to Gradio's own FastAPI app at launch (no other web framework).

Safety: binds 127.0.0.1 unless told otherwise; uploads are capped (launch's max_file_size); handlers
read only files gradio itself received (no path typed into the page is ever opened); stream URLs must be
rtsp://; each visitor's live analyzers are kept by the app's Visitors registry (per live websocket, or
under Gradio's session hash for RTSP; released when the connection or page closes, or after an idle time;
capped in number), and events run concurrently across visitors (each event has its own concurrency limit,
so a long file job never blocks a live view). Images a response returns are written to files of their own
(stream_fer.app.outputs), so identical requests never share an output file.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import gradio as gr

from stream_fer.app.handlers import AppHandlers
from stream_fer.app.live import STATIC_PATH, LiveEndpoint, live_routes
from stream_fer.app.outputs import response_image
from stream_fer.app.ports import check_port_free
from stream_fer.app.sessions import AnalyzerFactory, EnginePool, overlay_choices
from stream_fer.app.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_FACES_LIMIT,
    AnalysisSettings,
    AppConfig,
)
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

# How many events of each kind may run at once, over all visitors. Live events are short (one frame);
# file jobs are long and CPU-bound, so few run at a time and the rest wait in the queue.
LIVE_CONCURRENCY = 16
FILE_CONCURRENCY = 2  # photos: AppConfig.image_analyzers at once, one shared analyzer each

INTRO = """# stream-fer
Facial-expression analysis you can check: every prediction comes with where the model looked, the
facial Action Units (AUs) its expression involves, how well the two agree (cosine; low means *right
answer, wrong reasons* is possible), and MediaPipe's measured blendshapes for those AUs."""


def _user_errors(fn):
    """Show a StreamFerError as a one-line message in the page instead of a generic error."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StreamFerError as exc:
            raise gr.Error(str(exc)) from None
    return wrapper


LIVE_HEAD = (f'<link rel="stylesheet" href="{STATIC_PATH}/live.css">'
             f'<script src="{STATIC_PATH}/live.js" defer></script>')
LIVE_HTML = """<div class="sf-live">
  <div class="sf-stage"><video class="sf-video" playsinline muted></video><canvas class="sf-overlay"></canvas></div>
  <div class="sf-side">
    <div class="sf-controls"><button class="sf-start" type="button">Start live analysis</button>
      <span class="sf-status">Your camera starts when you click. The preview is mirrored; the analysis sees the
      true image. Nothing is stored.</span></div>
    <div class="sf-panels"></div>
  </div>
</div>"""

RTSP_HTML = """<div class="sf-live" data-mode="rtsp">
  <div class="sf-stage"><canvas class="sf-frame"></canvas><canvas class="sf-overlay"></canvas></div>
  <div class="sf-side"><div class="sf-status">Paste an rtsp:// URL and press Start.</div>
    <div class="sf-panels"></div></div>
</div>"""


def _watch_token(token: str) -> str:
    """The element the page's RTSP view reads its watch token from ("" : nothing to watch)."""
    return f'<span class="sf-rtsp-token" data-token="{token}"></span>'


OVERLAY_LABELS = {"box": "box", "label": "label", "bars": "probability bars", "attention": "attention map",
                  "au_regions": "AU regions", "panel": "explanation panel in the corner"}


class _Panels:
    """The panels beside a photo, created unrendered so the tab places them; `.outputs` is the handlers'
    order: probability bars, explanation image, summary, blendshapes, attention share per AU region."""

    def __init__(self, prefix: str, wide: bool = False) -> None:
        self.summary = gr.Markdown("No face yet.", elem_id=f"{prefix}-summary", render=False)
        self.probs = gr.Label(label="Expression probabilities (smoothed)", num_top_classes=8,
                              elem_id=f"{prefix}-probs", render=False)
        self.explanation = gr.Image(label="Where the model looked", show_label=False, type="numpy", format="png",
                                    interactive=False, elem_id=f"{prefix}-explanation", render=False)
        self.blendshapes = gr.Label(label="Measured blendshapes of those AUs (MediaPipe)", num_top_classes=10,
                                    show_heading=False, elem_id=f"{prefix}-blendshapes", render=False)
        self.au_share = gr.Label(label="Share of attention per AU region (all AUs)", num_top_classes=8 if wide else 6,
                                 show_heading=False, elem_id=f"{prefix}-au-share", render=False)

    @property
    def outputs(self) -> list:
        return [self.probs, self.explanation, self.summary, self.blendshapes, self.au_share]


def build_app(config: AppConfig | None = None, factory: AnalyzerFactory | None = None,
              handlers: AppHandlers | None = None) -> gr.Blocks:
    """The page. `factory` (engines + landmarker) is shared by every visitor; it is built from `config`
    when not given. The default backend's engine is loaded now and one photo analyzer is built and run
    (kept in the shared pool), so a missing model fails at start-up and MediaPipe's one-time set-up is
    not charged to the first visitor. `demo.handlers` is the page's AppHandlers (its Visitors accounting)."""
    config = config or AppConfig()
    if factory is None:
        factory = AnalyzerFactory(EnginePool(config.model_dir), config.landmarker_path)
    default_engine = factory.engines.get(config.backend)
    handlers = handlers or AppHandlers(config, factory)
    overlay_names, overlay_defaults = overlay_choices()
    import numpy as np

    handlers.images.analyse(np.zeros((64, 64, 3), np.uint8),  # the page's default settings: kept warm
                            AnalysisSettings.from_controls(config.backend, 1, "ema", 0.6, overlay_defaults))
    from stream_fer.smoothing import SMOOTHING_STRATEGIES

    # delete_cache: gradio's copies of uploads and outputs older than an hour go, checked every 30 minutes.
    with gr.Blocks(title="stream-fer", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"Engine: **{default_engine.name}** · classes: {', '.join(default_engine.info.class_names)}"
                    f" · uploads up to {config.max_upload_mb} MB", elem_id="engine-status")
        with gr.Accordion("Settings", open=True):
            with gr.Row():
                backend = gr.Dropdown(list(dict.fromkeys((config.backend, *config.backends))),
                                      value=config.backend, label="Backend", elem_id="backend")
                max_faces = gr.Slider(1, MAX_FACES_LIMIT, value=1, step=1, label="Max faces",
                                      elem_id="max-faces")
                smoothing = gr.Dropdown(list(SMOOTHING_STRATEGIES), value="ema", label="Smoothing",
                                        elem_id="smoothing")
                strength = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Smoothing strength",
                                     elem_id="smoothing-strength")
                selected = gr.Slider(1, MAX_FACES_LIMIT, value=1, step=1,
                                     label="Face shown in the panels (1 = leftmost)", elem_id="selected-face")
            overlays = gr.CheckboxGroup([(OVERLAY_LABELS.get(n, n.replace("_", " ")), n) for n in overlay_names],
                                        value=overlay_defaults, label="Overlays drawn on the video",
                                        elem_id="overlays")
        controls = [backend, max_faces, smoothing, strength, overlays]

        with gr.Tabs():
            with gr.Tab("Webcam", id="webcam"):
                # The page draws this view itself (static/live.js): its own <video>, an overlay canvas, and
                # panels, fed by compact per-frame results over the live websocket (stream_fer.app.live).
                gr.HTML(LIVE_HTML, head=LIVE_HEAD, js_on_load=None, elem_id="webcam-live")

            with gr.Tab("RTSP", id="rtsp"):
                timer = gr.Timer(config.rtsp_poll_s, active=False)
                with gr.Row():
                    url = gr.Textbox(label="Stream URL (rtsp:// only)", placeholder="rtsp://camera.local:554/stream",
                                     scale=4, elem_id="rtsp-url")
                    start = gr.Button("Start", variant="primary", scale=1, elem_id="rtsp-start")
                    stop = gr.Button("Stop", scale=1, elem_id="rtsp-stop")
                rtsp_status = gr.Markdown("Not started.", elem_id="rtsp-status")
                # The stream is analysed on the server; the page draws each analysed frame and its overlay
                # itself (static/live.js over the watch websocket), joined to this visitor's stream by a token.
                rtsp_token = gr.HTML(_watch_token(""), js_on_load=None, elem_id="rtsp-token")
                gr.HTML(RTSP_HTML, head=LIVE_HEAD, js_on_load=None, elem_id="rtsp-live")

                def rtsp_start(url_, backend_, faces_, smoothing_, strength_, overlays_, request: gr.Request):
                    status = handlers.rtsp_start(url_, request.session_hash, backend_, faces_, smoothing_,
                                                 strength_, overlays_)
                    token = _watch_token(handlers.rtsp_watch_token(request.session_hash))
                    return status, gr.Timer(active=True), token

                def rtsp_poll(request: gr.Request):
                    status, running = handlers.rtsp_status(request.session_hash)
                    return status, gr.Timer(active=bool(running))

                def rtsp_stop(request: gr.Request):
                    return handlers.rtsp_stop(request.session_hash), gr.Timer(active=False), _watch_token("")

                start.click(_user_errors(rtsp_start), [url, *controls], [rtsp_status, timer, rtsp_token],
                            api_name="rtsp_start", concurrency_limit=LIVE_CONCURRENCY, concurrency_id="rtsp-control")
                stop.click(rtsp_stop, None, [rtsp_status, timer, rtsp_token], api_name="rtsp_stop",
                           concurrency_limit=LIVE_CONCURRENCY, concurrency_id="rtsp-control")
                timer.tick(rtsp_poll, None, [rtsp_status, timer], api_visibility="private", show_progress="hidden",
                           concurrency_limit=LIVE_CONCURRENCY, concurrency_id="rtsp-poll")

            with gr.Tab("File", id="file"):
                with gr.Row():
                    with gr.Column(scale=2):
                        video_in = gr.File(label=f"Video file (up to {config.max_upload_mb} MB)",
                                           file_types=["video", ".mp4", ".mov", ".mkv", ".avi", ".webm"],
                                           type="filepath", elem_id="video-in")
                        run_video = gr.Button("Annotate", variant="primary", elem_id="video-run")
                        video_summary = gr.Markdown(elem_id="video-summary")
                    with gr.Column(scale=3):
                        video_out = gr.Video(label="Annotated video", interactive=False, elem_id="video-out")
                        csv_out = gr.File(label="Per-frame CSV", interactive=False, elem_id="csv-out")
                timeline = gr.LinePlot(x="time_s", y="probability", color="series", x_title="time (s)",
                                       y_title="smoothed probability", y_lim=[0, 1], height=320,
                                       label="Smoothed probabilities per face", elem_id="timeline")

                def video(path, backend_, faces_, smoothing_, strength_, overlays_,
                          progress=gr.Progress()):  # noqa: B008 (gradio injects the tracker here)
                    def report(done: int, total: int | None) -> None:
                        progress((done, total), desc="annotating", unit="frames")

                    return handlers.video(path, backend_, faces_, smoothing_, strength_, overlays_, progress=report)

                run_video.click(_user_errors(video), [video_in, *controls],
                                [video_out, csv_out, timeline, video_summary], api_name="video",
                                concurrency_limit=FILE_CONCURRENCY, concurrency_id="video")

            with gr.Tab("Image", id="image"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image_in = gr.Image(sources=["upload", "clipboard"], type="numpy", image_mode="RGB",
                                            label="Photo", elem_id="image-in")
                        run_image = gr.Button("Analyse", variant="primary", elem_id="image-run")
                    with gr.Column(scale=1):
                        image_out = gr.Image(label="Annotated", type="numpy", format="png", interactive=False,
                                             elem_id="image-out")
                image_panels = _Panels("image", wide=True)
                image_panels.summary.render()
                image_panels.explanation.render()
                with gr.Row():
                    image_panels.probs.render()
                    image_panels.blendshapes.render()
                    image_panels.au_share.render()

                def image(rgb, *controls_and_face):
                    annotated, probs, explanation, *rest = handlers.image(rgb, *controls_and_face)
                    # files of this response's own: identical requests must not rewrite each other's output
                    return (response_image(annotated, "annotated"), probs,
                            response_image(explanation, "explanation"), *rest)

                gr.on([run_image.click, image_in.upload], _user_errors(image),
                      [image_in, *controls, selected], [image_out, *image_panels.outputs],
                      api_name="image", concurrency_limit=config.image_analyzers, concurrency_id="image")

        def leave(request: gr.Request):
            handlers.leave(request.session_hash)

        demo.unload(leave)  # the page closed or the client's heartbeat ended: its live sessions go now
    demo.handlers = handlers
    return demo


def launch(demo: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           max_upload_mb: int = AppConfig.max_upload_mb, block: bool = True, quiet: bool = False):
    """Start the server for a built page; returns (app, local_url) when block=False."""
    check_port_free(host, port)
    demo.queue(default_concurrency_limit=1)
    # The live view's websocket and its JS/CSS, as routes of Gradio's own FastAPI app (given first, so no
    # Gradio route shadows them).
    routes = live_routes(LiveEndpoint(demo.handlers))
    try:
        app, local_url, _ = demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                                        app_kwargs={"routes": routes},
                                        max_file_size=f"{int(max_upload_mb)}mb", prevent_thread_lock=not block,
                                        quiet=quiet, ssr_mode=False, show_error=False, footer_links=["api"],
                                        mcp_server=False, pwa=False, enable_monitoring=False)
    except OSError as exc:  # lost a race for the port, or the host name does not resolve here
        raise StreamFerError(f"cannot start the app on {host}:{port}: {exc}") from None
    return app, local_url


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend: str = "auto",
          max_upload_mb: int = AppConfig.max_upload_mb, model_dir: Path | None = None,
          landmarker_path: Path | None = None, block: bool = True, max_sessions: int = AppConfig.max_sessions,
          session_idle_s: float = AppConfig.session_idle_s, min_face: float = 40):
    """Build the page and serve it (blocks until Ctrl-C unless block=False; then returns the Blocks).
    `min_face`: the smallest face (px) every analysis looks for (stream_fer.api.DEFAULT_MIN_FACE)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the app", host)
    check_port_free(host, port)
    from stream_fer.app.visitors import limit_malloc_arenas
    from stream_fer.model_files import resolve_landmarker
    from stream_fer.pipeline import single_threaded_blas

    limit_malloc_arenas()  # before the server's worker threads exist: RSS follows the visitors, not the requests
    single_threaded_blas()  # for the whole server: each visitor's analysis is one thread already

    landmarker_path = resolve_landmarker(landmarker_path)  # verified now: a missing model fails at start-up
    config = AppConfig(backend=backend, model_dir=model_dir, landmarker_path=landmarker_path,
                       max_upload_mb=max_upload_mb, max_sessions=max_sessions, session_idle_s=session_idle_s)
    engines = EnginePool(model_dir, report=lambda line: print(f"stream-fer: {line}", file=sys.stderr, flush=True))
    demo = build_app(config, AnalyzerFactory(engines, landmarker_path, min_face))
    _, url = launch(demo, host, port, max_upload_mb, block=False, quiet=True)
    print(f"stream-fer: serving on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    if block:
        try:
            while demo.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stream-fer: stopping the app", file=sys.stderr, flush=True)
        finally:
            demo.close()
            demo.handlers.close()
    return demo
