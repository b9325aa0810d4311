"""The per-frame analysis end to end on real frames with real MediaPipe and the real ONNX engine: valid
probabilities, stable ids for two faces, empty frames, stage latencies, and per-face rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stream_fer.analyzer import (
    Classified,
    Detected,
    FrameAnalyzer,
    attention_au_cosine,
    attention_shares,
    crop_au_masks,
)
from stream_fer.face.action_units import ACTION_UNITS, EXPRESSION_AUS
from stream_fer.face.alignment import alignment_matrix, apply_affine
from stream_fer.face.au_maps import expression_map
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.records import ROW_FIELDS, to_row
from stream_fer.render import OverlayOptions


@pytest.fixture(scope="module")
def analyzer(onnx_engine, landmarker_model):
    """VIDEO mode, up to two faces, three missed frames allowed."""
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, max_faces=2, mode="video",
                       track_max_missed=3) as a:
        yield a


def test_attention_cosine_and_shares_on_a_real_face(smile):
    """ATT-COS as training's evaluation computes it (attention upsampled bilinearly, shifted to be
    non-negative, against expression_map in crop space); shares of attention per AU region."""
    import cv2

    m = alignment_matrix(smile.points, 48)
    crop_pts = apply_affine(m, smile.points)
    att = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    up = cv2.resize(att, (48, 48), interpolation=cv2.INTER_LINEAR).astype(np.float64).ravel()
    up -= up.min()
    for name in CLASS_NAMES:
        cos = attention_au_cosine(att, crop_pts, 48, name)
        if not EXPRESSION_AUS[name]:
            assert cos is None
            continue
        ref = expression_map(crop_pts, 48, name, 48).astype(np.float64).ravel()
        assert cos == pytest.approx(up @ ref / np.linalg.norm(up) / np.linalg.norm(ref), abs=1e-5), name
    # Attention exactly on the happiness map agrees perfectly with it, and less with surprise's.
    happy = expression_map(crop_pts, 48, "happiness", 48)
    assert attention_au_cosine(happy, crop_pts, 48, "happiness") == pytest.approx(1.0, abs=1e-6)
    assert attention_au_cosine(happy, crop_pts, 48, "surprise") < 0.5
    shares = attention_shares(att, crop_pts, 48)
    assert set(shares) == set(ACTION_UNITS) and all(0.0 <= s <= 1.0 for s in shares.values())
    # Uniform attention: each share is the region's share of the crop's area.
    flat = attention_shares(np.ones((12, 12), np.float32), crop_pts, 48)
    assert 0.0 < flat[25] < flat[26] < 0.2  # lips part is a small region, jaw drop a larger one


REFERENCE = Path(__file__).parent / "data" / "au_reference.npz"


def test_masks_shares_and_cosines_keep_their_pinned_values():
    """The AU region masks, attention shares and attention-AU cosines of eight real faces (six frames of
    WolfgangLanger_Pexels.mp4 and the two README stills; the landmarks in crop pixels and the model's
    attention stored as inputs) as the code computed them before the CPU work of issue 15 (commit 0a67cef).
    Tolerance: at most 2 mask pixels of 18 x 48 x 48 differ per face (a pixel centre on an ellipse's
    edge may flip with the order of floating-point operations), shares and cosines within 1e-4."""
    ref = np.load(REFERENCE)
    numbers = [int(n) for n in ref["au_numbers"]]
    classes = [str(c) for c in ref["class_names"]]
    assert numbers == [au.number for au in ACTION_UNITS.values()] and classes == list(CLASS_NAMES)
    for i, (pts, att) in enumerate(zip(ref["crop_points"], ref["attention"])):
        masks = crop_au_masks(pts, 48)
        want = np.unpackbits(ref["masks"][i])[: 18 * 48 * 48].reshape(18, 48, 48).astype(bool)
        got = np.stack([masks[n] for n in numbers])
        assert (got != want).sum() <= 2, f"face {i}: {(got != want).sum()} mask pixels differ"
        shares = attention_shares(att, pts, 48, masks)
        np.testing.assert_allclose([shares[n] for n in numbers], ref["shares"][i], atol=1e-4, err_msg=f"face {i}")
        for k, name in enumerate(classes):
            cos = attention_au_cosine(att, pts, 48, name, masks)
            if np.isnan(ref["cosines"][i, k]):
                assert cos is None, (i, name)
            else:
                assert cos == pytest.approx(ref["cosines"][i, k], abs=1e-4), (i, name)


def test_classify_and_track_give_the_documented_values(analyzer, smile, laugh, make_frame):
    """What the analyzer returns per face is what the documented functions compute from its crop: the
    shares from attention_shares, the cosine of the smoothed label from attention_au_cosine."""
    for i, still in enumerate((smile, laugh)):
        analyzer.reset()
        classified = analyzer.classify(analyzer.detect(make_frame(still.rgb, i)))
        result = analyzer.track(classified)
        for c, face in zip(classified.faces, result.faces):
            shares = attention_shares(c.attention, c.crop_points, analyzer.crop_size)
            assert set(face.au_attention_share) == set(shares)
            for n, v in shares.items():
                assert face.au_attention_share[n] == pytest.approx(v, abs=1e-6)
            cos = attention_au_cosine(c.attention, c.crop_points, analyzer.crop_size, face.label)
            assert (face.att_au_cosine is None) == (cos is None)
            if cos is not None:
                assert face.att_au_cosine == pytest.approx(cos, abs=1e-6)


def test_one_face_end_to_end(analyzer, smile, make_frame):
    analyzer.reset()
    annotated, result = analyzer.analyze(make_frame(smile.rgb, 0))
    assert annotated.shape == smile.rgb.shape and not np.array_equal(annotated, smile.rgb)
    assert result.frame_index == 0 and len(result.faces) == 1
    face = result.faces[0]
    assert face.track_id == 1
    for p in (face.raw_probs, face.probs):
        assert p.shape == (7,) and (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-4)
    assert face.label in CLASS_NAMES and face.label == CLASS_NAMES[int(face.probs.argmax())]
    assert face.attention.shape == (analyzer.info.map_size,) * 2 and (face.attention >= 0).all()
    assert face.cams.shape == (7,) + face.attention.shape
    assert face.align_matrix.shape == (2, 3) and face.landmarks.shape == (478, 3)
    if face.label == "neutral":
        assert face.att_au_cosine is None
    else:
        assert -1.0 <= face.att_au_cosine <= 1.0
    assert set(face.au_attention_share) == set(ACTION_UNITS)
    assert len(face.blendshapes) == 52
    assert set(result.latency_ms) == {"landmarks", "classify", "track", "render"}
    assert all(v >= 0 for v in result.latency_ms.values())


def test_stages_are_frozen_and_can_run_one_by_one(analyzer, smile, make_frame):
    analyzer.reset()
    frame = make_frame(smile.rgb, 0)
    detected = analyzer.detect(frame)
    assert isinstance(detected, Detected) and len(detected.faces) == 1
    classified = analyzer.classify(detected)
    assert isinstance(classified, Classified) and classified.frame is frame
    with pytest.raises(dataclasses.FrozenInstanceError):
        classified.faces = ()
    result = analyzer.track(classified)
    assert set(result.latency_ms) == {"landmarks", "classify", "track"}
    out = analyzer.render(frame, result)
    assert out.shape == frame.rgb.shape


def test_two_faces_keep_their_ids_and_a_lost_face_ends_its_track(analyzer, two_faces, make_frame):
    analyzer.reset()
    index = 0
    ids_by_side: dict[str, set[int]] = {"left": set(), "right": set()}
    for shift in (0, 4, 8, 12):
        _, result = analyzer.analyze(make_frame(np.roll(two_faces, shift, axis=1), index))
        index += 1
        assert len(result.faces) == 2
        for face in result.faces:
            side = "left" if (face.box[0] + face.box[2]) / 2 < two_faces.shape[1] / 2 else "right"
            ids_by_side[side].add(face.track_id)
            assert face.probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert ids_by_side == {"left": {min(ids_by_side["left"])}, "right": {min(ids_by_side["right"])}}
    assert ids_by_side["left"] != ids_by_side["right"]
    # No face for 4 frames (> track_max_missed = 3): both tracks end, their smoothing state with them.
    blank = np.zeros_like(two_faces)
    for _ in range(4):
        _, result = analyzer.analyze(make_frame(blank, index))
        index += 1
        assert result.faces == ()
    assert analyzer.tracker.active_ids == () and analyzer.smoother.track_ids == ()
    _, result = analyzer.analyze(make_frame(two_faces, index))
    assert {f.track_id for f in result.faces}.isdisjoint(ids_by_side["left"] | ids_by_side["right"])


def test_rows_for_faces_and_for_an_empty_frame(analyzer, smile, make_frame):
    analyzer.reset()
    _, result = analyzer.analyze(make_frame(smile.rgb, 7, fps=25.0))
    rows = to_row(result)
    assert len(rows) == 1 and tuple(rows[0]) == ROW_FIELDS
    row = rows[0]
    face = result.faces[0]
    assert row["frame_index"] == 7 and row["timestamp"] == pytest.approx(7 / 25.0)
    assert row["track_id"] == face.track_id and row["label"] == face.label and row["num_faces"] == 1
    assert sum(row[f"p_{c}"] for c in CLASS_NAMES) == pytest.approx(1.0, abs=1e-3)
    assert sum(row[f"raw_{c}"] for c in CLASS_NAMES) == pytest.approx(1.0, abs=1e-3)
    assert row["box_x0"] < row["box_x1"] and row["box_y0"] < row["box_y1"]
    assert all(row[f"share_AU{n}"] is not None for n in ACTION_UNITS)
    from stream_fer.face.action_units import blendshapes_for

    filled = {k[3:] for k, v in row.items() if k.startswith("bs_") and v is not None}
    assert filled == set(blendshapes_for(face.label))
    _, empty = analyzer.analyze(make_frame(np.zeros_like(smile.rgb), 8, fps=25.0))
    (row,) = to_row(empty)
    assert row["frame_index"] == 8 and row["num_faces"] == 0
    assert all(row[k] is None for k in ROW_FIELDS if k not in ("frame_index", "timestamp", "num_faces"))


def test_image_mode_and_no_overlays(onnx_engine, landmarker_model, smile, make_frame):
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", smoothing="none",
                       overlays=OverlayOptions(box=False, label=False, bars=False, attention=False,
                                               au_regions=False)) as a:
        annotated, result = a.analyze(make_frame(smile.rgb, 0))
        assert np.array_equal(annotated, smile.rgb)
        np.testing.assert_array_equal(result.faces[0].probs, result.faces[0].raw_probs)


def test_a_landmarker_started_early_is_used_when_its_settings_match(onnx_engine, landmarker_model):
    """analyze() starts MediaPipe's set-up before it opens the input: the analyzer takes that landmarker
    when it was started with the analyzer's settings, and otherwise builds its own and closes that one."""
    import time

    from stream_fer.discovery import DEFAULT_MIN_FACE
    from stream_fer.landmarks import LandmarkerLoad

    settings = {"mode": "video", "max_faces": 2, "min_face": DEFAULT_MIN_FACE}
    early = LandmarkerLoad(landmarker_model, **settings)
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, landmarker_load=early, **settings) as a:
        assert a.landmarker is early.result()
    wrong = LandmarkerLoad(landmarker_model, **{**settings, "mode": "image"})
    made = wrong.result()
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, landmarker_load=wrong, **settings) as a:
        assert a.landmarker is not made and a.landmarker.mode == "video"
        deadline = time.monotonic() + 10
        while made._landmarker is not None and time.monotonic() < deadline:  # closed in its own thread
            time.sleep(0.01)
        assert made._landmarker is None


def test_start_up_imports_only_what_the_analysis_runs_on(onnx_engine, landmarker_model):
    """A FrameAnalyzer in a fresh interpreter loads MediaPipe without the matplotlib.pyplot and
    sounddevice that MediaPipe's package imports for tasks this product never runs (about 0.6 s of CPU
    at every start), and without torch or gradio; matplotlib still imports normally afterwards."""
    import subprocess
    import sys

    code = f"""
import sys
from stream_fer.analyzer import FrameAnalyzer
from stream_fer.engines.select import load_engine
with FrameAnalyzer(load_engine({str(onnx_engine.model_dir)!r}, backend="onnxruntime"),
                   landmarker_path={str(landmarker_model)!r}) as a:
    pass
loaded = [m for m in ("matplotlib", "matplotlib.pyplot", "sounddevice", "torch", "gradio") if m in sys.modules]
assert not loaded, loaded
import matplotlib.pyplot as plt
assert callable(plt.figure)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_onnx_runtime_starts_without_its_usage_telemetry(onnx_engine):
    """ONNX Runtime 1.32 records sessions into a local telemetry database for upload and waits for its uploader
    at exit; the engine turns that off before onnxruntime loads (a user's own ORT_DISABLE_TELEMETRY wins)."""
    import os
    import subprocess
    import sys

    code = f"""
import os
from stream_fer.engines.select import load_engine
engine = load_engine({str(onnx_engine.model_dir)!r}, backend="onnxruntime")
engine.infer(__import__("numpy").zeros((1, 48, 48), "uint8"))
links = []
for fd in os.listdir("/proc/self/fd"):
    try:
        links.append(os.readlink(f"/proc/self/fd/{{fd}}"))
    except OSError:
        pass
assert not [p for p in links if "onnxruntime.db" in p], links
print(os.environ["ORT_DISABLE_TELEMETRY"])
"""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", code.replace("assert not", "assert True or")], capture_output=True,
                          text=True, timeout=120, env={**env, "ORT_DISABLE_TELEMETRY": "0"})
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr[-2000:]


def test_the_int8_default_explains_the_sample_as_the_fp32_model_does(onnx_engine, landmarker_model, sample_video):
    """What a CPU runs by default (the INT8 export) against the FP32 model, every second frame of the shipped
    sample, one analysis each. Stated tolerance (about twice what was measured on all 96 frames: 0.031, 0.005,
    0.008, 0.054 and a median 0.0001): the same label on every face, probabilities within 0.06, the
    attention-AU cosine within 0.015, every AU's attention share within 0.02, trust within 0.1 (median 0.01)."""
    import av

    from stream_fer.engines import default_model_dir, load_engine
    from stream_fer.frames import Frame

    int8 = load_engine(None, backend="onnxruntime-int8")  # what auto picks without a GPU
    assert int8.model_dir == default_model_dir() / "int8" and onnx_engine.info.precision == "fp32"
    with av.open(str(sample_video)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % 2 == 0]
    results = []
    for engine in (onnx_engine, int8):
        with FrameAnalyzer(engine, landmarker_path=landmarker_model, mode="image", smoothing="none") as a:
            results.append([a.analyze(Frame(i, i / 24, 0.0, f))[1].faces for i, f in enumerate(frames)])
    pairs = [(a, b) for fa, fb in zip(*results) for a, b in zip(fa, fb, strict=True)]
    assert len(pairs) == len(frames)  # one face in every frame, for both
    trust_diffs = []
    for a, b in pairs:
        assert a.label == b.label
        assert np.abs(a.raw_probs - b.raw_probs).max() <= 0.06
        if a.att_au_cosine is not None:
            assert abs(a.att_au_cosine - b.att_au_cosine) <= 0.015
        assert max(abs(a.au_attention_share[k] - b.au_attention_share[k]) for k in a.au_attention_share) <= 0.02
        trust_diffs.append(abs(a.trust - b.trust))
    assert max(trust_diffs) <= 0.1 and np.median(trust_diffs) <= 0.01


def test_each_face_is_read_with_its_mirror_image_where_the_crop_is_unsure(onnx_engine, landmarker_model, smile,
                                                                          make_frame):
    """classify() reads the aligned crop and, where its top probability is below mirror_below, the mirror image
    too, and averages the two (the mirror's maps mirrored back); above the threshold the crop's reading is kept and
    no mirror probabilities are recorded; mirror=False reads the crop alone. The mirror's own probabilities stay
    for the trust score."""
    from stream_fer.align import align_faces

    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", mirror=False) as a:
        detected = a.detect(make_frame(smile.rgb))
    crops, _ = align_faces(smile.rgb, [detected.faces[0].points], onnx_engine.info.input_size)
    crop = onnx_engine.infer(crops)  # the crop network (of a pair too: engines/pair.py), then the mirror's reader
    mirrored = getattr(onnx_engine, "mirror", onnx_engine).infer(np.ascontiguousarray(crops[:, :, ::-1]))
    top = float(crop.probs[0].max())
    results = {}
    for key, mirror, below in (("below", True, min(1.0, top + 1e-3)), ("every", True, 1.0),
                               ("above", True, top - 1e-3), ("alone", False, 1.0)):
        with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", smoothing="none",
                           mirror=mirror, mirror_below=below) as a:
            results[key] = a.classify(a.detect(make_frame(smile.rgb))).faces[0]
    for both in (results["below"], results["every"]):
        np.testing.assert_allclose(both.raw_probs, (crop.probs[0] + mirrored.probs[0]) / 2, atol=1e-5)
        np.testing.assert_allclose(both.attention, (crop.attention[0] + mirrored.attention[0][:, ::-1]) / 2,
                                   atol=1e-5)
        np.testing.assert_allclose(both.cams, (crop.cams[0] + mirrored.cams[0][:, :, ::-1]) / 2, rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(both.mirror_probs, mirrored.probs[0], atol=1e-5)
    for alone in (results["above"], results["alone"]):
        np.testing.assert_allclose(alone.raw_probs, crop.probs[0], atol=1e-5)
        np.testing.assert_allclose(alone.attention, crop.attention[0], atol=1e-5)
        assert alone.mirror_probs is None
    assert not np.allclose(results["every"].raw_probs, results["alone"].raw_probs, atol=1e-4)  # the mirror counts


def test_the_mirror_threshold_is_a_probability(onnx_engine, landmarker_model):
    from stream_fer.errors import StreamFerError

    for bad in (0, -0.1, 1.5, True, "0.7"):
        with pytest.raises(StreamFerError, match="mirror_below must be a probability"):
            FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mirror_below=bad)
