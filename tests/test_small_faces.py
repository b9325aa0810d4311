"""Faces at a distance (stream_fer.discovery) on real frames with real MediaPipe and the real ONNX engine: a
small face in an HD frame is found and classified as at full size, one large and three small faces keep four
stable track ids, and on today's large-face clip the results are exactly those of the whole-frame pass."""

from __future__ import annotations

import itertools
import subprocess
import sys

import cv2
import numpy as np
import pytest

from stream_fer.analyzer import FrameAnalyzer
from stream_fer.discovery import DETECTABLE_SHARE, TILE_OVERLAP, plan_tiles, search_needed, whole_frame_reach
from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame
from stream_fer.landmarks import Landmarker
from stream_fer.model_files import FACE_DETECTOR_SHA256, face_detector_model, sha256_of

HD = (1280, 720)


def _place(canvas: np.ndarray, rgb: np.ndarray, face_px: float, source_face_px: float,
           at: tuple[int, int]) -> tuple[int, int, int, int]:
    """Paste `rgb` scaled so that its face is face_px tall; returns the pasted rectangle."""
    scale = face_px / source_face_px
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x, y = at
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return x, y, x + small.shape[1], y + small.shape[0]


def _face_px(still) -> float:
    x0, y0, x1, y1 = still.faces[0].box
    return y1 - y0


def _inside(box, rect) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


def _frame(rgb: np.ndarray, index: int = 0) -> Frame:
    return Frame(index, index / 30.0, 0.0, rgb)


def test_the_tiles_show_every_face_size_the_whole_frame_pass_misses():
    """Every face from min_face px up to the whole-frame reach, anywhere in the frame, lies whole inside a
    tile where it is at least DETECTABLE_SHARE of the tile's side."""
    width, height, min_face = 1920, 1080, 40
    tiles = plan_tiles(width, height, min_face)
    assert tiles and len(tiles) < 120
    reach = whole_frame_reach(width, height)
    rng = np.random.default_rng(0)
    for size in np.geomspace(min_face, reach, 12):
        for x, y in rng.uniform((0, 0), (width - size, height - size), (40, 2)):
            fits = [t for t in tiles if t.x0 <= x and t.y0 <= y and x + size <= t.x0 + t.width
                    and y + size <= t.y0 + t.height and size >= DETECTABLE_SHARE * max(t.width, t.height)]
            assert fits, f"a {size:.0f} px face at ({x:.0f}, {y:.0f}) is in no tile that can show it"
    assert TILE_OVERLAP > 0


def test_no_search_where_the_whole_frame_pass_sees_min_face():
    assert not search_needed(640, 360, 120) and plan_tiles(640, 360, 120) == ()
    assert not search_needed(1920, 1080, 0)
    assert search_needed(1920, 1080, 40) and search_needed(640, 360, 40)


def test_the_detector_model_comes_verified_from_the_landmarker_bundle(landmarker_model):
    assert sha256_of(face_detector_model(landmarker_model)) == FACE_DETECTOR_SHA256


def test_a_negative_min_face_is_one_clear_error(landmarker_model):
    with pytest.raises(StreamFerError, match="min_face"):
        Landmarker(landmarker_model, min_face=-1)


@pytest.fixture(scope="module")
def image_analyzers(onnx_engine, landmarker_model):
    """IMAGE mode, no smoothing: with the small-face search (the default min_face) and without it."""
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", smoothing="none") as found, \
            FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", smoothing="none",
                          min_face=0) as whole:
        yield found, whole


def test_a_small_face_in_an_hd_frame_is_found_and_classified_as_at_full_size(image_analyzers, smile):
    found, whole = image_analyzers
    full = found.analyze(_frame(smile.rgb))[1].faces
    assert len(full) == 1
    canvas = np.full((HD[1], HD[0], 3), 30, np.uint8)
    rect = _place(canvas, smile.rgb, 56, _face_px(smile), (900, 420))
    assert whole.analyze(_frame(canvas))[1].faces == ()  # the whole-frame pass alone does not see it
    faces = found.analyze(_frame(canvas))[1].faces
    assert len(faces) == 1
    face = faces[0]
    assert _inside(face.box, rect)
    assert 40 < face.box[3] - face.box[1] < 75  # mesh box in frame pixels: mapped back from the crop
    assert face.landmarks.shape == (478, 3) and len(face.blendshapes) == 52
    assert face.label == full[0].label == "happiness"
    # the landmarks lie on the small face where the full-size ones do, scaled
    x0, y0 = rect[:2]
    scale = (rect[2] - rect[0]) / smile.rgb.shape[1]
    expected = full[0].landmarks[:, :2] * scale + (x0, y0)
    assert np.median(np.linalg.norm(face.landmarks[:, :2] - expected, axis=1)) < 2.0


def test_one_large_and_three_small_faces_keep_four_stable_tracks(onnx_engine, landmarker_model, smile, neutral):
    """VIDEO mode over frames that move a little: four faces each frame, the same four ids throughout."""
    base = np.full((HD[1], HD[0], 3), 30, np.uint8)
    rects = [_place(base, neutral.rgb, 250, _face_px(neutral), (20, 150)),
             _place(base, smile.rgb, 48, _face_px(smile), (760, 60)),
             _place(base, neutral.rgb, 64, _face_px(neutral), (1000, 300)),
             _place(base, smile.rgb, 90, _face_px(smile), (760, 480))]
    ids_per_frame = []
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="video", max_faces=6) as analyzer:
        for t in range(6):
            shift = np.float32([[1, 0, 2 * t], [0, 1, t]])  # the camera pans slowly
            rgb = cv2.warpAffine(base, shift, HD)
            result = analyzer.analyze(_frame(rgb, t))[1]
            assert len(result.faces) == 4, f"frame {t}: {len(result.faces)} faces"
            by_rect = {}
            for face in result.faces:
                (i,) = [i for i, r in enumerate(rects) if _inside(face.box, (r[0], r[1], r[2] + 2 * t, r[3] + t))]
                by_rect[i] = face.track_id
            assert sorted(by_rect) == [0, 1, 2, 3]
            ids_per_frame.append(tuple(by_rect[i] for i in range(4)))
        stats = analyzer.landmarker.search_stats
    assert len(set(ids_per_frame)) == 1 and len(set(ids_per_frame[0])) == 4
    assert stats["lost"] == 0 and stats["found"] == 3  # found once, then followed from frame to frame


@pytest.mark.parametrize("max_faces", [1, 2])
def test_the_large_face_path_gives_the_same_results_as_without_the_search(onnx_engine, landmarker_model, shared_dir,
                                                                         max_faces):
    import av

    path = shared_dir / "videos" / "WolfgangLanger_Pexels.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), 8)]
    outputs = []
    for min_face in (0, 40):
        with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="video", max_faces=max_faces,
                           min_face=min_face) as analyzer:
            results = [analyzer.analyze(_frame(rgb, i))[1] for i, rgb in enumerate(frames)]
            stats = analyzer.landmarker.search_stats
        outputs.append([[(f.track_id, f.label, f.box, f.probs.tobytes(), f.landmarks.tobytes()) for f in r.faces]
                        for r in results])
        if min_face and max_faces == 1:
            assert stats["frames"] == 0, "the search ran although the whole-frame pass had max_faces faces"
        if min_face and max_faces == 2:
            assert stats["tiles"] > 0 and stats["found"] == 0  # it looked, and found nothing that is not there
    assert all(len(faces) == 1 for faces in outputs[0])
    assert outputs[0] == outputs[1]


def test_the_search_runs_silently_and_is_freed_without_close(landmarker_model):
    """In a fresh interpreter: the face detector task (LiteRT) adds no chatter on stderr, and a landmarker with
    the search dropped without close() leaves nothing to fail at interpreter exit."""
    script = f"""
import numpy as np
from stream_fer.landmarks import Landmarker
lm = Landmarker({str(landmarker_model)!r}, mode="video", min_face=40)
assert lm.detect(np.zeros((720, 1280, 3), np.uint8), 0) == []
assert lm.search_stats["tiles"] > 0
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def test_one_default_min_face_in_the_api_the_cli_batch_and_the_analyzer():
    import inspect

    import stream_fer
    from stream_fer.cli import build_parser
    from stream_fer.discovery import DEFAULT_MIN_FACE

    assert inspect.signature(FrameAnalyzer).parameters["min_face"].default == DEFAULT_MIN_FACE
    assert inspect.signature(stream_fer.analyze).parameters["min_face"].default == DEFAULT_MIN_FACE
    assert inspect.signature(stream_fer.Analyzer).parameters["min_face"].default == DEFAULT_MIN_FACE
    assert build_parser().parse_args(["run", "in.mp4", "--csv", "x.csv"]).min_face == DEFAULT_MIN_FACE
    assert build_parser().parse_args(["batch", "in.mp4", "--out-dir", "d"]).min_face == DEFAULT_MIN_FACE
    from stream_fer.batch import BatchSettings

    assert BatchSettings().min_face == DEFAULT_MIN_FACE
    with pytest.raises(StreamFerError, match="min_face"):
        stream_fer.Analyzer(min_face=-5)


def test_cli_min_face_finds_the_small_face(cli, tmp_path, smile, landmarker_model):
    """`stream-fer run IMAGE --min-face PX`: the small face in an HD picture is in the rows; with 0 it is not."""
    canvas = np.full((HD[1], HD[0], 3), 30, np.uint8)
    _place(canvas, smile.rgb, 56, _face_px(smile), (900, 420))
    picture = tmp_path / "far.png"
    cv2.imwrite(str(picture), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    rows = {}
    for min_face in (40, 0):
        out = tmp_path / f"rows_{min_face}.csv"
        result = cli(picture, "--csv", out, "--min-face", min_face, "--landmarker", landmarker_model, "--no-progress")
        assert result.returncode == 0, result.stderr
        rows[min_face] = out.read_text().splitlines()
    header = rows[40][0].split(",")
    label = header.index("label")
    assert [line.split(",")[label] for line in rows[40][1:]] == ["happiness"]
    assert all(not line.split(",")[label] for line in rows[0][1:])  # one empty row: no face


def test_the_app_analyses_with_the_servers_min_face(onnx_engine, landmarker_model, smile):
    """`stream-fer serve --min-face PX` reaches every analyzer the app builds."""
    from stream_fer.app.sessions import AnalyzerFactory, EnginePool
    from stream_fer.app.settings import AnalysisSettings
    from stream_fer.cli import build_parser
    from stream_fer.discovery import DEFAULT_MIN_FACE

    assert build_parser().parse_args(["serve"]).min_face == DEFAULT_MIN_FACE
    canvas = np.full((HD[1], HD[0], 3), 30, np.uint8)
    _place(canvas, smile.rgb, 56, _face_px(smile), (900, 420))
    found = {}
    for min_face in (DEFAULT_MIN_FACE, 0):
        factory = AnalyzerFactory(EnginePool(loader=lambda **_: onnx_engine), landmarker_model, min_face=min_face)
        with factory.create(AnalysisSettings(), mode="image") as analyzer:
            found[min_face] = len(analyzer.analyze(_frame(canvas))[1].faces)
    assert found == {DEFAULT_MIN_FACE: 1, 0: 0}


def test_an_empty_scene_is_scanned_ever_more_slowly(landmarker_model, shared_dir):
    """no_face.mp4 (960x540, 26 tiles): the whole scan on the first frame, then at half the rate (1/120 of the
    plan per frame instead of 1/60), since no face showed."""
    import av

    from stream_fer.discovery import DEFAULT_SCAN_INTERVAL

    path = shared_dir / "videos" / "no_face.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    plan = len(plan_tiles(frames[0].shape[1], frames[0].shape[0], 40))
    with Landmarker(landmarker_model, mode="video", min_face=40) as lm:
        assert all(lm.detect(rgb, 40 * i) == [] for i, rgb in enumerate(frames))
        tiles = lm.search_stats["tiles"]
    at_full_rate = plan + (len(frames) - 1) * plan / DEFAULT_SCAN_INTERVAL
    assert plan + (len(frames) - 1) * plan / (2 * DEFAULT_SCAN_INTERVAL) - 2 <= tiles < 0.8 * at_full_rate
