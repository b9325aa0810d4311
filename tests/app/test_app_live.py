"""The live view's endpoint on real frames: the handler's per-frame result (schema checked), the websocket on
the served app (frames in, results out, the newest frame analysed, a closed connection releasing its
analyzer, the session cap refusing cleanly), and streaming writing nothing to Gradio's temp folder."""

from __future__ import annotations

import base64
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from stream_fer.face.action_units import EXPRESSION_AUS, blendshapes_for

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


def read_frames(path: Path, indices, width: int | None = 320) -> dict[int, np.ndarray]:
    """Frames of a clip, downscaled to `width` as the page sends them."""
    import cv2

    from stream_fer.sources import FileSource

    wanted, out = set(indices), {}
    with FileSource(path) as source:
        for frame in source:
            if frame.index in wanted:
                rgb = frame.rgb
                if width:
                    rgb = cv2.resize(rgb, (width, round(width * rgb.shape[0] / rgb.shape[1])),
                                     interpolation=cv2.INTER_AREA)
                out[frame.index] = rgb
            if len(out) == len(wanted):
                break
    return out


@pytest.fixture(scope="module")
def clip_frames(single_face_video) -> dict[int, np.ndarray]:
    """Every 6th frame of single_face.mp4 at 320 px (neutral at 0, the broad smile around 36)."""
    return read_frames(single_face_video, range(0, 72, 6))


def check_frame_json(msg: dict, width: int, height: int, class_names) -> None:
    """The live result's schema: what live.js reads, with types and ranges."""
    assert msg["type"] == "result" and isinstance(msg["id"], int) and isinstance(msg["index"], int)
    assert (msg["width"], msg["height"]) == (width, height)
    assert isinstance(msg["dropped"], int) and msg["analyse_ms"] > 0
    assert set(msg["latency_ms"]) >= {"landmarks", "classify", "track"}
    for face in msg["faces"]:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= width + 1 and 0 <= y0 < y1 <= height + 1
        assert list(face["probs"]) == list(class_names)
        assert sum(face["probs"].values()) == pytest.approx(1.0, abs=0.01)
        assert face["label"] == max(face["probs"], key=face["probs"].get)
        assert face["confidence"] == pytest.approx(max(face["probs"].values()), abs=1e-3)
        assert face["colour"].startswith("#") and len(face["colour"]) == 7
        att = face["attention"]
        w, h = att["size"]
        heat = np.frombuffer(base64.b64decode(att["data"]), np.uint8)
        assert heat.size == w * h and heat.max() == 255, "the attention map, scaled to 0..255"
        # The map's corners, through to_frame, land around the face.
        m = np.array(att["to_frame"], dtype=float).reshape(2, 3)
        centre = m @ np.array([att["crop"] / 2, att["crop"] / 2, 1.0])
        assert x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1, "the crop's centre is inside the face box"
        aus = {a["au"] for a in face["aus"]}
        assert aus == set(EXPRESSION_AUS[face["label"]]), "the predicted expression's AU regions"
        for region in face["aus"]:
            assert region["code"] == f"AU{region['au']}" and region["name"]
            for cx, cy, rx, ry, _angle in region["ellipses"]:
                assert x0 - 5 <= cx <= x1 + 5 and y0 - 5 <= cy <= y1 + 5 and rx > 0 and ry > 0
        assert all(0.0 <= v <= 1.0 for v in face["au_share"].values())
        assert list(face["blendshapes"]) == list(blendshapes_for(face["blendshapes_for"]))[:8]
        if face["cosine"] is None:
            assert not EXPRESSION_AUS[face["label"]]
        else:
            assert -1.0 <= face["cosine"] <= 1.0
        assert isinstance(face["low_trust"], bool) and isinstance(face["trust_reason"], str)
        if face["trust"] is not None:  # the shipped model has a trust model
            assert 0.0 <= face["trust"] <= 1.0 and face["low_trust"] == (face["trust"] < 0.5)
            assert face["trust_colour"].startswith("#")
    json.dumps(msg)  # plain JSON all the way down


def test_live_handler_gives_each_frame_a_compact_result(app_handlers, clip_frames):
    from stream_fer.app.settings import AnalysisSettings

    settings = AnalysisSettings()
    happiness, tracks, indices = {}, set(), []
    for i, index in enumerate(sorted(clip_frames)):
        rgb = clip_frames[index]
        msg = app_handlers.live(rgb, "visitor-live", settings, frame_id=100 + i)
        check_frame_json(msg, rgb.shape[1], rgb.shape[0], app_handlers.factory.engines.get("auto").info.class_names)
        assert msg["id"] == 100 + i
        assert len(msg["faces"]) == 1, f"frame {index}: one face"
        assert len(json.dumps(msg)) < 6000, "a compact result, not an image"
        face = msg["faces"][0]
        tracks.add(face["track"])
        indices.append(msg["index"])
        happiness[index] = face["probs"]["happiness"]
    app_handlers.leave("visitor-live")
    assert indices == list(range(len(clip_frames))), "one stream, frames in arrival order"
    assert len(tracks) == 1
    assert happiness[36] > happiness[0], f"the broad smile looks happier than the neutral start: {happiness}"


def test_live_handler_with_no_face(app_handlers, shared_dir):
    from stream_fer.app.settings import AnalysisSettings

    path = shared_dir / "videos" / "no_face.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rgb = read_frames(path, [0])[0]
    msg = app_handlers.live(rgb, "visitor-no-face", AnalysisSettings())
    app_handlers.leave("visitor-no-face")
    assert msg["faces"] == [] and msg["width"] == rgb.shape[1]


def _jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return data.tobytes()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_the_live_websocket_analyses_the_newest_frame_and_writes_nothing(app_server, clip_frames, gradio_temp,
                                                                        tmp_path):
    """Frames in, results out on the served app. A burst of frames sent faster than they can be analysed
    gets results for the newest ones (older ones dropped, counted); streaming adds nothing to Gradio's temp
    folder or the system temp folder's app folders; closing the connection releases its analyzer."""
    from websockets.sync.client import connect

    from stream_fer.app.live import LIVE_PATH

    visitors = app_server.demo.handlers.visitors
    before = visitors.stats()
    frames = [clip_frames[i] for i in sorted(clip_frames)]
    temp_before = _folder_bytes(gradio_temp)
    url = app_server.url.replace("http://", "ws://").rstrip("/") + LIVE_PATH
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "settings", "max_faces": 1, "smoothing": "ema", "smoothing_strength": 0.6}))
        # one at a time: every frame gets its result
        for i, rgb in enumerate(frames[:4]):
            ws.send(struct.pack("<I", i) + _jpeg(rgb))
            msg = json.loads(ws.recv(timeout=60))
            assert msg["id"] == i and len(msg["faces"]) == 1
        assert visitors.stats().live == before.live + 1
        # a burst: the newest frame is analysed, the ones it overtook are not
        burst = list(range(100, 100 + 8))
        for i, frame_id in enumerate(burst):
            ws.send(struct.pack("<I", frame_id) + _jpeg(frames[i % len(frames)]))
        got = []
        while not got or got[-1]["id"] != burst[-1]:
            got.append(json.loads(ws.recv(timeout=60)))
        ids = [m["id"] for m in got]
        assert ids == sorted(ids) and ids[-1] == burst[-1]
        assert len(ids) < len(burst) and got[-1]["dropped"] >= len(burst) - len(ids)
        # a frame that is not a picture: one error message, the connection stays usable
        ws.send(struct.pack("<I", 999) + b"not a jpeg")
        msg = json.loads(ws.recv(timeout=60))
        assert msg["type"] == "error" and "JPEG" in msg["message"] and not msg.get("final")
        ws.send(struct.pack("<I", 1000) + _jpeg(frames[0]))
        assert json.loads(ws.recv(timeout=60))["id"] == 1000
    deadline = time.monotonic() + 10
    while visitors.stats().live > before.live and time.monotonic() < deadline:
        time.sleep(0.05)
    assert visitors.stats().live == before.live, "the closed connection's analyzer is released"
    assert visitors.stats().released >= before.released + 1
    assert _folder_bytes(gradio_temp) - temp_before < 10_000, "nothing per frame written to Gradio's temp folder"


def test_the_live_websocket_refuses_cleanly_when_the_app_is_full(app_factory, gradio_temp, clip_frames):
    from app_helpers import APP_TEST_UPLOAD_MB, free_port
    from websockets.sync.client import connect

    from stream_fer.app.app import build_app, launch
    from stream_fer.app.live import LIVE_PATH
    from stream_fer.app.settings import AppConfig

    demo = build_app(AppConfig(max_upload_mb=APP_TEST_UPLOAD_MB, max_sessions=1), app_factory)
    _, url = launch(demo, "127.0.0.1", free_port(), APP_TEST_UPLOAD_MB, block=False, quiet=True)
    ws_url = url.replace("http://", "ws://").rstrip("/") + LIVE_PATH
    try:
        with connect(ws_url, open_timeout=30) as first:
            first.send(struct.pack("<I", 0) + _jpeg(clip_frames[0]))
            assert json.loads(first.recv(timeout=60))["id"] == 0
            with connect(ws_url, open_timeout=30) as second:
                msg = json.loads(second.recv(timeout=30))
                assert msg == {"type": "error", "final": True,
                               "message": "the app is busy: 1 visitors are using it right now; try again in a minute"}
    finally:
        demo.close()
        demo.handlers.close()




def test_the_rtsp_watch_websocket_sends_each_analysed_frame_with_its_result(app_server, single_face_video):
    """The drawn RTSP view: a visitor's stream, found by its watch token, comes down as JPEG + result pairs
    of the same analysed frame; an unknown token is refused in one message."""
    import cv2
    from websockets.sync.client import connect

    from stream_fer.app.live import WATCH_PATH

    handlers = app_server.demo.handlers
    base = app_server.url.replace("http://", "ws://").rstrip("/") + WATCH_PATH
    with connect(base + "?token=nothing", open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30)) == {"type": "error", "message": "no such stream", "final": True}

    from app_helpers import rtsp_server_class

    RtspServer = rtsp_server_class()
    with RtspServer.from_video(single_face_video, fps=30) as server:
        handlers.rtsp_start(server.url, "visitor-watch", "auto", 1, "ema", 0.6, [])
        try:
            token = handlers.rtsp_watch_token("visitor-watch")
            assert token and handlers.rtsp_watched(token) is handlers.visitors.peek("visitor-watch", "rtsp")
            pairs, statuses = 0, []
            with connect(f"{base}?token={token}", open_timeout=30, max_size=2**22) as ws:
                deadline = time.monotonic() + 60
                while pairs < 5 and time.monotonic() < deadline:
                    message = ws.recv(timeout=60)
                    if isinstance(message, str):
                        statuses.append(json.loads(message)["type"])
                        continue
                    (frame_id,) = struct.unpack("<I", message[:4])
                    picture = cv2.imdecode(np.frombuffer(message[4:], np.uint8), cv2.IMREAD_COLOR)
                    result = json.loads(ws.recv(timeout=30))
                    assert result["id"] == frame_id, "the result right after its picture"
                    assert picture.shape[:2] == (360, 640) and (result["width"], result["height"]) == (640, 360)
                    assert len(result["faces"]) == 1
                    pairs += 1
            assert pairs == 5 and "status" in statuses
        finally:
            handlers.rtsp_stop("visitor-watch")
    assert handlers.rtsp_watched(token) is None, "a stopped stream's token leads nowhere"
