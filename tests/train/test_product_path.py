"""The product-path evaluation (train/product_path.py) on a small real slice of FER+: it runs the image the way
the analyzer runs a frame, caches what is slow, and the trust fit's features come from it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def product_path(small_splits, landmarker_model, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAM_FER_CACHE", str(tmp_path_factory.mktemp("cache")))  # keep the user's cache out of it
    from stream_fer.train.product_path import run_split

    split = small_splits["test"].subset(slice(0, 24))
    try:
        yield split, run_split(split, landmarker_path=landmarker_model)
    finally:
        mp.undo()


def test_outputs_are_the_engines_on_the_stored_crops(product_path, onnx_engine):
    split, out = product_path
    assert out.found.mean() > 0.8  # MediaPipe finds most FER+ faces on the upscaled image
    found = out.found
    np.testing.assert_allclose(out.probs[found].sum(axis=1), 1.0, atol=1e-4)
    assert not out.probs[~found].any()
    # each face read as the analyzer reads it: with its mirror image (by the default's mirror model, when it has
    # one) where the crop alone is less sure than MIRROR_BELOW, else the crop's reading
    from stream_fer.analyzer import MIRROR_BELOW

    crop = onnx_engine.infer(out.crops[found])
    mirrored = getattr(onnx_engine, "mirror", onnx_engine).infer(np.ascontiguousarray(out.crops[found][:, :, ::-1]))
    read = crop.probs.max(axis=1) < MIRROR_BELOW
    assert read.any() and not read.all()  # both kinds among these 24 faces
    np.testing.assert_array_equal(out.mirror_read()[found], read)
    want = np.where(read[:, None], (crop.probs + mirrored.probs) / 2, crop.probs)
    np.testing.assert_allclose(out.probs[found], want, atol=1e-5)
    np.testing.assert_allclose(out.mirror_probs[found][read], mirrored.probs[read], atol=1e-5)
    assert np.isnan(out.mirror_probs[found][~read]).all()
    att = np.where(read[:, None, None], (crop.attention + mirrored.attention[:, :, ::-1]) / 2, crop.attention)
    np.testing.assert_allclose(out.attention[found], att, atol=1e-5)
    cams = np.where(read[:, None, None, None], (crop.cams + mirrored.cams[:, :, :, ::-1]) / 2, crop.cams)
    np.testing.assert_allclose(out.cams[found], cams, rtol=1e-3, atol=1e-2)  # float16
    assert len(out.blendshape_names) == 52 and (out.blendshapes[found] >= 0).all()


def test_a_face_gets_what_the_analyzer_gives_the_same_frame(product_path, onnx_engine, landmarker_model):
    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.frames import Frame
    from stream_fer.train.landmarks import ATTEMPTS, _attempt_image

    split, out = product_path
    size, pad, _, fill = ATTEMPTS[0]
    with FrameAnalyzer(onnx_engine, landmarker_path=landmarker_model, mode="image", smoothing="none",
                       min_detection_confidence=0.2) as analyzer:
        checked = 0
        for i in np.flatnonzero(out.found)[:6]:
            frame = _attempt_image(split.images[i], size, pad, False, fill)
            faces = analyzer.classify(analyzer.detect(Frame(0, 0.0, 0.0, frame))).faces
            if not faces:  # found by a later (equalised) attempt: not this frame
                continue
            np.testing.assert_allclose(faces[0].raw_probs, out.probs[i], atol=1e-4)
            np.testing.assert_allclose(faces[0].crop_points, out.crop_points[i], atol=1e-3)
            checked += 1
    assert checked >= 3


def test_metrics_and_the_cache(product_path, landmarker_model):
    from stream_fer.train.product_path import product_path_metrics, run_split

    split, out = product_path
    m = product_path_metrics(out)
    assert m["images"] == 24 and m["faces_found"] == int(out.found.sum())
    assert m["n"] == m["labelled_found"] and 0.8 < m["coverage"] <= 1.0
    assert 0.0 <= m["accuracy"] <= 1.0 and m["att_cos"] is not None
    cached = run_split(split, landmarker_path=landmarker_model)  # read back, not recomputed
    np.testing.assert_array_equal(cached.probs, out.probs)
    np.testing.assert_array_equal(cached.crops, out.crops)


def test_another_model_reuses_the_landmarks_and_runs_its_own_engine(product_path, landmarker_model):
    """MediaPipe runs once per split: a second model (the shipped INT8 export) gets the same crops from the
    faces cache and its own outputs."""
    import os
    from pathlib import Path

    from stream_fer.engines import default_model_dir
    from stream_fer.train.product_path import run_split

    int8 = default_model_dir() / "int8"
    if not (int8 / "model.onnx").is_file():
        pytest.skip(f"no INT8 export shipped in {int8}")
    split, out = product_path
    faces_files = sorted((Path(os.environ["STREAM_FER_CACHE"]) / "train").glob("product_path_faces-*.npz"))
    assert len(faces_files) == 1
    stamp = faces_files[0].stat().st_mtime_ns
    other = run_split(split, int8, landmarker_path=landmarker_model)
    assert faces_files[0].stat().st_mtime_ns == stamp  # read, not written again
    np.testing.assert_array_equal(other.crops, out.crops)
    np.testing.assert_array_equal(other.found, out.found)
    assert not np.array_equal(other.probs, out.probs)  # its own engine ran
    assert (other.probs[out.found].argmax(1) == out.probs[out.found].argmax(1)).mean() >= 0.9



def test_crop_only_reads_the_crop_alone(product_path, onnx_engine, landmarker_model):
    from stream_fer.train.product_path import mirror_probs, run_split

    split, out = product_path
    alone = run_split(split, landmarker_path=landmarker_model, mirror=False)
    found = alone.found
    np.testing.assert_allclose(alone.probs[found], onnx_engine.infer(alone.crops[found]).probs, atol=1e-5)
    assert alone.mirror_probs is None
    read = out.mirror_read()
    np.testing.assert_allclose(mirror_probs(alone)[read], out.mirror_probs[read], atol=1e-5)  # computed when not stored
    every = run_split(split, landmarker_path=landmarker_model, mirror_below=1.0)  # every face's mirror image
    assert (every.mirror_read() == found).all()
    np.testing.assert_allclose(every.mirror_probs[found], mirror_probs(alone)[found], atol=1e-5)
    np.testing.assert_allclose(every.probs[read], out.probs[read], atol=1e-6)
