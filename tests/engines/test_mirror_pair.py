"""A model folder whose mirror images are read by a second network (engines/pair.py): found, run on the same
backend as the folder's own model, averaged as the analyzer averages a face with its mirror, and never mixed with
a network of another kind. Real exports of two different small models, real ONNX Runtime, real faces."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stream_fer.analyzer import average_readings, read_faces
from stream_fer.engines import load_engine
from stream_fer.engines.base import ModelInfo
from stream_fer.engines.pair import MirrorPair, mirror_model_dir
from stream_fer.errors import StreamFerError


@pytest.fixture
def pair_dir(tmp_path, exported_fp32, other_fp32):
    model_dir = tmp_path / "pair"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(other_fp32, model_dir / "mirror")
    return model_dir


@pytest.fixture
def no_gpu(monkeypatch):
    from stream_fer.engines import select

    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: False)


def test_a_folder_with_a_mirror_model_reads_mirror_images_with_it(pair_dir, exported_fp32, other_fp32, real_faces,
                                                                   no_gpu):
    reported = []
    engine = load_engine(pair_dir, threads=1, report=reported.append)
    assert isinstance(engine, MirrorPair) and engine.mirror_dir == pair_dir / "mirror"
    assert reported == [f"engine: using onnxruntime-cpu ({pair_dir}, fp32; mirror images read by "
                        f"{pair_dir / 'mirror'}, fp32)"]
    crop_alone = load_engine(exported_fp32, threads=1)
    mirror_alone = load_engine(other_fp32, threads=1)
    mirrored = np.ascontiguousarray(real_faces[:, :, ::-1])
    out, mirror_probs = read_faces(engine, real_faces, mirror_below=1.0)  # every face's mirror image
    want = average_readings(crop_alone.infer(real_faces), mirror_alone.infer(mirrored))
    np.testing.assert_allclose(out.probs, want.probs, atol=1e-6)
    np.testing.assert_allclose(out.attention, want.attention, atol=1e-6)
    np.testing.assert_allclose(out.cams, want.cams, atol=1e-5)
    np.testing.assert_allclose(mirror_probs, mirror_alone.infer(mirrored).probs, atol=1e-6)
    # where the crop network is sure, its reading stays and the mirror model is not run
    sure = crop_alone.infer(real_faces).probs.max(axis=1) >= 0.7
    assert sure.any() and not sure.all()
    some, some_mirror = read_faces(engine, real_faces, mirror_below=0.7)
    np.testing.assert_allclose(some.probs[~sure], want.probs[~sure], atol=1e-6)
    np.testing.assert_allclose(some.probs[sure], crop_alone.infer(real_faces).probs[sure], atol=1e-6)
    assert np.isnan(some_mirror[sure]).all() and not np.isnan(some_mirror[~sure]).any()
    # ... which is not the folder's own network read with its mirror image
    own, _ = read_faces(crop_alone, real_faces, mirror_below=1.0)
    assert np.abs(own.probs - out.probs).max() > 1e-2
    # a plain engine call and a run without the mirror read the crop with the folder's own network
    np.testing.assert_allclose(engine.infer(real_faces).probs, crop_alone.infer(real_faces).probs, atol=1e-6)
    alone, none = read_faces(engine, real_faces, mirror=False)
    assert none is None and np.allclose(alone.probs, crop_alone.infer(real_faces).probs, atol=1e-6)
    assert not isinstance(load_engine(pair_dir, threads=1, mirror=False), MirrorPair)


def test_a_pair_of_one_network_reads_exactly_as_that_network_with_its_mirror(tmp_path, exported_fp32, real_faces):
    """The pair's averaging is the one-network averaging: only which network reads the mirror differs."""
    model_dir = tmp_path / "same"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(exported_fp32, model_dir / "mirror")
    pair, _ = read_faces(load_engine(model_dir, "onnxruntime-cpu", threads=1), real_faces, mirror_below=1.0)
    one, _ = read_faces(load_engine(exported_fp32, "onnxruntime-cpu", threads=1), real_faces, mirror_below=1.0)
    for a, b in ((pair.probs, one.probs), (pair.attention, one.attention), (pair.cams, one.cams)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_int8_sibling_pairs_with_the_mirror_models_int8_sibling(tmp_path, exported_fp32, exported_int8,
                                                                     other_fp32, other_int8, no_gpu):
    model_dir = tmp_path / "pair"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(exported_int8, model_dir / "int8")
    shutil.copytree(other_fp32, model_dir / "mirror")
    engine = load_engine(model_dir, threads=1)
    # the mirror model has no INT8 export yet: auto runs both in FP32 and says why, never one of each
    assert engine.info.precision == "fp32" and engine.mirror.info.precision == "fp32"
    assert "no INT8 export" in dict(engine.selection.skipped)["onnxruntime-int8"]
    shutil.copytree(other_int8, model_dir / "mirror" / "int8")
    engine = load_engine(model_dir, threads=1)
    assert engine.model_dir == model_dir / "int8" and engine.mirror.model_dir == model_dir / "mirror" / "int8"
    assert engine.info.precision == engine.mirror.info.precision == "int8"
    # the INT8 folder named directly (as `train eval --product-path --model-dir D/int8` does) pairs the same way
    assert mirror_model_dir(model_dir / "int8") == model_dir / "mirror" / "int8"
    direct = load_engine(model_dir / "int8", "onnxruntime", threads=1)
    assert isinstance(direct, MirrorPair) and direct.mirror.model_dir == model_dir / "mirror" / "int8"


def test_a_mirror_model_of_another_kind_is_one_clear_error(pair_dir, other_int8):
    shutil.rmtree(pair_dir / "mirror")
    shutil.copytree(other_int8, pair_dir / "mirror")  # INT8 beside an FP32 crop model
    with pytest.raises(StreamFerError, match="does not match its crop model \\(precision"):
        load_engine(pair_dir, "onnxruntime-cpu")
    info = ModelInfo.from_file(pair_dir / "mirror" / "model.json")
    d = info.to_json().replace('"int8"', '"fp32"').replace('"fear"', '"contempt"')
    (pair_dir / "mirror" / "model.json").write_text(d)
    with pytest.raises(StreamFerError, match="class_names"):
        load_engine(pair_dir, "onnxruntime-cpu")


def test_a_named_checkpoint_is_one_network(pair_dir, tiny_checkpoint):
    pytest.importorskip("torch")
    engine = load_engine(pair_dir, "torch-cpu", tiny_checkpoint, threads=1)
    assert not isinstance(engine, MirrorPair)


def test_the_batch_fingerprint_and_results_name_both_networks(pair_dir, exported_fp32):
    from stream_fer.batch.markers import model_sha256

    alone = model_sha256(exported_fp32)
    paired = model_sha256(pair_dir)
    assert alone == ModelInfo.from_file(exported_fp32 / "model.json").onnx_sha256
    assert paired != alone and len(paired) == 64  # earlier outputs of the one network are not reused


def test_one_network_reads_the_mirror_image_only_where_the_crop_is_unsure(exported_fp32, real_faces):
    engine = load_engine(exported_fp32, "onnxruntime-cpu", threads=1)
    crop = engine.infer(real_faces)
    mirror = engine.infer(np.ascontiguousarray(real_faces[:, :, ::-1]))
    every = average_readings(crop, mirror)
    for below in (0.5, 0.7, 0.9):
        unsure = crop.probs.max(axis=1) < below
        out, mirror_probs = read_faces(engine, real_faces, mirror_below=below)
        np.testing.assert_allclose(out.probs, np.where(unsure[:, None], every.probs, crop.probs), atol=1e-6)
        np.testing.assert_allclose(out.attention[unsure], every.attention[unsure], atol=1e-6)
        np.testing.assert_allclose(out.attention[~unsure], crop.attention[~unsure], atol=1e-6)
        np.testing.assert_allclose(mirror_probs[unsure], mirror.probs[unsure], atol=1e-6)
        assert np.isnan(mirror_probs[~unsure]).all()
    sure_only = real_faces[crop.probs.max(axis=1) >= 0.9]
    out, mirror_probs = read_faces(engine, sure_only, mirror_below=0.9)  # nothing to read again
    assert len(sure_only) and np.isnan(mirror_probs).all()
