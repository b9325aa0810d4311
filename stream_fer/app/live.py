"""The live view's transport: small JPEG frames up a websocket, compact per-frame results down.

The page (static/live.js) plays the camera in its own <video> and draws the overlay itself on a canvas
over it, from the JSON this module sends for each analysed frame: per face the box, label, smoothed
probabilities, the small attention map with the affine that places it on the face, the predicted
expression's AU regions as ellipses in frame coordinates with their FACS names, the attention share per
AU, the blendshapes that measure those AUs, and the attention-AU cosine with its trust cue. No image is
re-encoded or written to disk per frame.

Only the newest frame is analysed: frames that arrive while one is being analysed replace each other and
the older ones are dropped (counted). Each websocket connection is one visitor of the app's Visitors
registry (the cap applies; the connection closing releases the analyzer at once).

The wire format (one connection):
- up, text: {"type": "settings", "max_faces": 1, "smoothing": "ema", "smoothing_strength": 0.6}
- up, binary: 4-byte little-endian frame id, then a JPEG (the page's frame, unmirrored, about 320 px wide)
- down, text: frame_json(...) for each analysed frame ({"type": "result", "id": <frame id>, ...}), or
  {"type": "error", "message": "..."} (then the server closes the connection when the error is final)

The RTSP tab's view uses a second socket, WATCH_PATH?token=...: the stream is read and analysed on the
server (the CLI's pipeline); each newly analysed frame comes down as a JPEG (binary, 4-byte id first) and
then its frame_json (same id), so the page draws picture, overlay and panels of one analysed frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
import uuid
from pathlib import Path

import numpy as np

from stream_fer.app.settings import AnalysisSettings
from stream_fer.app.visitors import AppBusy, Visitors
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

LIVE_PATH = "/stream-fer/live"
WATCH_PATH = "/stream-fer/rtsp-watch"
STATIC_PATH = "/stream-fer/static"
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_FRAME_BYTES = 2_000_000  # a 320 px JPEG is 10-30 kB; anything this big is not a live frame
MAX_SIDE = 1280  # frames are analysed as sent; larger ones are refused rather than slowly analysed
BLENDSHAPE_LIMIT = 8


def decode_jpeg(data: bytes) -> np.ndarray:
    """An RGB uint8 frame from JPEG (or PNG) bytes; a StreamFerError when it is not a usable picture."""
    import cv2

    if not data or len(data) > MAX_FRAME_BYTES:
        raise StreamFerError(f"a live frame must be a JPEG of at most {MAX_FRAME_BYTES} bytes")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StreamFerError("a live frame is not a readable JPEG")
    if max(bgr.shape[:2]) > MAX_SIDE or min(bgr.shape[:2]) < 16:
        raise StreamFerError(f"a live frame must be 16 to {MAX_SIDE} px a side, not {bgr.shape[1]}x{bgr.shape[0]}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _r(x: float, digits: int = 1) -> float:
    return round(float(x), digits)


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def face_json(face, class_names: tuple[str, ...], crop_size: int, low_trust_cosine: float) -> dict:
    """One face as the page draws it (all coordinates in the analysed frame's pixels)."""
    from stream_fer.app.panels import agreement_words
    from stream_fer.draw import au_colour
    from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS, aus_for, blendshapes_for
    from stream_fer.face.au_maps import place_aus
    from stream_fer.render import class_colour, trust_colour

    probs = np.asarray(face.probs, dtype=float)
    att = np.asarray(face.attention, dtype=np.float32)
    att = att - float(att.min())
    att = att / max(float(att.max()), 1e-8)
    heat = np.round(att * 255).astype(np.uint8)
    # frame -> crop is the align matrix; the page needs crop -> frame to place the map
    m = np.vstack([np.asarray(face.align_matrix, dtype=np.float64), [0, 0, 1]])
    inverse = np.linalg.inv(m)[:2]
    aus = aus_for(face.label) if EXPRESSION_AUS.get(face.label) else ()
    regions = []
    if aus:
        placed, slices = place_aus(np.asarray(face.landmarks)[:, :2], aus)
        for au, s in zip(aus, slices, strict=True):
            regions.append({
                "au": au.number, "code": au.code, "name": au.name, "colour": _hex(au_colour(au.number)),
                "ellipses": [[_r(c[0]), _r(c[1]), _r(a[0]), _r(a[1]), _r(t, 3)] for c, a, t in
                             zip(placed.centres[s], placed.semi_axes[s], placed.angles[s], strict=True)],
            })
    focus = face.label if EXPRESSION_AUS.get(face.label) else max(
        (n for n in class_names if EXPRESSION_AUS.get(n)),
        key=lambda n: probs[class_names.index(n)], default=None)
    shapes = {name: _r(face.blendshapes.get(name, 0.0), 3) for name in (blendshapes_for(focus) if focus else ())}
    share = {}
    for number, value in sorted(face.au_attention_share.items(), key=lambda kv: -kv[1]):
        au = ACTION_UNITS.get(int(number))
        share[f"AU{number} {au.name}" if au else f"AU{number}"] = _r(value, 3)
    cosine = face.att_au_cosine
    trust = getattr(face, "trust", None)  # 0-1, where the model folder has a trust model (stream_fer.trust)
    return {
        "track": int(face.track_id),
        "box": [_r(v) for v in face.box],
        "label": face.label,
        "colour": _hex(class_colour(face.label)),
        "confidence": _r(face.confidence, 3),
        "probs": {n: _r(p, 3) for n, p in zip(class_names, probs, strict=False)},
        "attention": {"size": [int(heat.shape[1]), int(heat.shape[0])], "crop": int(crop_size),
                      "to_frame": [_r(v, 4) for v in inverse.ravel()],
                      "data": base64.b64encode(heat.tobytes()).decode("ascii")},
        "aus": regions,
        "au_share": share,
        "blendshapes": dict(list(shapes.items())[:BLENDSHAPE_LIMIT]),
        "blendshapes_for": focus,
        "cosine": None if cosine is None else _r(cosine, 3),
        "agreement": agreement_words(cosine),
        # the cue: the trust score where there is one (low below 0.5, as the renderer colours it), else the
        # attention-AU cosine against the validated threshold
        "low_trust": bool(trust < 0.5) if trust is not None else bool(cosine is not None and cosine < low_trust_cosine),
        "trust": None if trust is None else _r(trust, 3),
        "trust_reason": getattr(face, "trust_reason", "") or "",
        "trust_colour": None if trust is None else _hex(trust_colour(trust)),
    }


def frame_json(result, width: int, height: int, class_names: tuple[str, ...], crop_size: int,
               frame_id: int, dropped: int = 0, analyse_ms: float | None = None) -> dict:
    """One analysed frame: its id (the page's), size, faces left to right, timings."""
    from stream_fer.app.panels import faces_left_to_right
    from stream_fer.summary import LOW_TRUST_COSINE

    faces = [face_json(f, class_names, crop_size, LOW_TRUST_COSINE) for f in faces_left_to_right(result)]
    return {"type": "result", "id": int(frame_id), "width": int(width), "height": int(height),
            "index": int(result.frame_index), "faces": faces, "dropped": int(dropped),
            "latency_ms": {k: _r(v) for k, v in (result.latency_ms or {}).items()},
            "analyse_ms": None if analyse_ms is None else _r(analyse_ms)}


def settings_from_message(message: dict, backend: str) -> AnalysisSettings:
    return AnalysisSettings.from_controls(backend, message.get("max_faces"), message.get("smoothing"),
                                          message.get("smoothing_strength"), ())


class LiveEndpoint:
    """The websocket endpoint, bound to one server's AppHandlers (its analyzer factory and Visitors)."""

    def __init__(self, handlers) -> None:
        self.handlers = handlers
        self.visitors: Visitors = handlers.visitors
        self.backend = handlers.config.backend

    async def serve(self, websocket) -> None:
        """One live view's connection, from accept to close."""
        from starlette.websockets import WebSocketDisconnect

        await websocket.accept()
        visitor = f"live-{uuid.uuid4().hex}"
        settings = AnalysisSettings(backend=self.backend)
        pending: dict = {}
        wake = asyncio.Event()
        counts = {"dropped": 0}

        try:
            self.handlers.admit_live(visitor)  # admitted (or refused) at once, not at the first frame
        except AppBusy as exc:
            await websocket.send_text(json.dumps({"type": "error", "message": str(exc), "final": True}))
            await websocket.close(code=1013)
            return

        async def analyse_latest() -> None:
            while True:
                await wake.wait()
                wake.clear()
                frame_id, data = pending.pop("frame")
                try:
                    message = await asyncio.to_thread(self._analyse, visitor, data, settings, frame_id,
                                                      counts["dropped"])
                except AppBusy as exc:
                    message = {"type": "error", "message": str(exc), "final": True}
                except StreamFerError as exc:
                    message = {"type": "error", "message": str(exc), "id": frame_id}
                await websocket.send_text(json.dumps(message, separators=(",", ":")))
                if message.get("final"):
                    await websocket.close(code=1013)
                    return

        worker = asyncio.create_task(analyse_latest())
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    data = msg["bytes"]
                    if len(data) < 5:
                        continue
                    (frame_id,) = struct.unpack("<I", data[:4])
                    if "frame" in pending:
                        counts["dropped"] += 1  # a newer frame came before this one was analysed
                    pending["frame"] = (frame_id, data[4:])
                    wake.set()
                elif msg.get("text"):
                    try:
                        message = json.loads(msg["text"])
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("type") == "settings":
                        settings = settings_from_message(message, self.backend)
                if worker.done():
                    break
        except WebSocketDisconnect:
            pass
        finally:
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the connection is gone either way
                pass
            await asyncio.to_thread(self.visitors.leave, visitor)

    def _analyse(self, visitor: str, data: bytes, settings: AnalysisSettings, frame_id: int, dropped: int) -> dict:
        return self.handlers.live(decode_jpeg(data), visitor, settings, frame_id, dropped)


    async def watch(self, websocket) -> None:
        """The drawn RTSP view: the visitor's stream (found by the watch token the page got from the Start
        button) is analysed on the server by the CLI's pipeline; each newly analysed frame is sent down as
        a JPEG (at most WATCH_WIDTH px wide; binary: 4-byte id + JPEG) followed by its result (text, same
        id), and the status line about once a second. Nothing is written to disk."""
        await websocket.accept()
        session = self.handlers.rtsp_watched(websocket.query_params.get("token", ""))
        if session is None:
            await websocket.send_text(json.dumps({"type": "error", "message": "no such stream", "final": True}))
            await websocket.close()
            return
        frame_id, last_status = 0, 0.0
        closed = asyncio.ensure_future(_closed(websocket))
        try:
            while not closed.done():
                analysed = session.take_new()
                if analysed is not None:
                    data, message = await asyncio.to_thread(watched_frame, analysed, frame_id)
                    await websocket.send_bytes(data)
                    await websocket.send_text(message)
                    frame_id += 1
                now = time.monotonic()
                if now - last_status > 1.0 or (analysed is None and not session.running):
                    last_status = now
                    await websocket.send_text(json.dumps({"type": "status", "text": session.status(),
                                                          "running": session.running}))
                    if not session.running:
                        break
                if analysed is None:
                    await asyncio.sleep(0.02)
        except Exception:  # noqa: BLE001 - the page went away mid-send
            pass
        finally:
            closed.cancel()


async def _closed(websocket) -> None:
    """Returns when the page closes the connection (it sends nothing else on a watch socket)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


WATCH_WIDTH = 640


def watched_frame(analysed, frame_id: int) -> tuple[bytes, str]:
    """(id + JPEG of the frame, at most WATCH_WIDTH wide; its result as JSON in the frame's own pixels)."""
    import cv2

    rgb = analysed.rgb
    h, w = rgb.shape[:2]
    small = rgb if w <= WATCH_WIDTH else cv2.resize(rgb, (WATCH_WIDTH, round(WATCH_WIDTH * h / w)),
                                                      interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(small[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise StreamFerError("could not encode a frame")
    message = frame_json(analysed.result, w, h, analysed.class_names, analysed.crop_size, frame_id)
    return struct.pack("<I", frame_id) + jpeg.tobytes(), json.dumps(message, separators=(",", ":"))


def live_routes(endpoint: LiveEndpoint) -> list:
    """The routes to give Gradio's FastAPI app (launch's app_kwargs): the websocket and the page's JS/CSS."""
    from starlette.routing import Mount, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    return [WebSocketRoute(LIVE_PATH, endpoint.serve), WebSocketRoute(WATCH_PATH, endpoint.watch),
            Mount(STATIC_PATH, app=StaticFiles(directory=str(STATIC_DIR)), name="stream-fer-static")]


class LiveClient:
    """A small synchronous client of the live endpoint (benchmarks, tests, scripts): send an RGB frame,
    get its result."""

    def __init__(self, url: str, quality: int = 80, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + LIVE_PATH
        self.quality = quality
        self.timeout = timeout
        self._ws = None
        self._next_id = 0

    def __enter__(self) -> LiveClient:
        from websockets.sync.client import connect

        self._ws = connect(self.url, open_timeout=self.timeout, max_size=2**22)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def settings(self, **values) -> None:
        self._ws.send(json.dumps({"type": "settings", **values}))

    def send(self, rgb: np.ndarray) -> dict:
        """Send one frame (JPEG-encoded here) and wait for its result (or an error message)."""
        import cv2

        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise StreamFerError("could not encode the frame")
        frame_id = self._next_id
        self._next_id += 1
        self._ws.send(struct.pack("<I", frame_id) + jpeg.tobytes())
        while True:
            message = json.loads(self._ws.recv(timeout=self.timeout))
            if message.get("type") == "error" or message.get("id") == frame_id:
                return message
