"""The shipped default model (engines/default/): its files load, its eval.json is what the eval command
produces, and its ONNX export agrees with its checkpoint on real faces."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stream_fer.engines import default_model_dir
from stream_fer.engines.base import CHECKPOINT_FILENAME, META_FILENAME, ONNX_FILENAME, ModelInfo, file_sha256

DEFAULT = default_model_dir()
SHIPPED = (ONNX_FILENAME, META_FILENAME, CHECKPOINT_FILENAME, "eval.json", "MODEL_CARD.md")


def test_default_model_files_are_shipped():
    missing = [name for name in SHIPPED if not (DEFAULT / name).is_file()]
    assert not missing, f"engines/default/ lacks {missing}"


def test_metadata_matches_the_shipped_files():
    info = ModelInfo.from_file(DEFAULT / META_FILENAME)
    assert info.source_checkpoint_sha256 == file_sha256(DEFAULT / CHECKPOINT_FILENAME)
    assert info.onnx_sha256 == file_sha256(DEFAULT / ONNX_FILENAME)
    assert info.input_size == 48 and info.map_size >= 8


def test_checkpoint_loads_weights_only_and_onnx_agrees_on_real_faces(real_faces):
    from stream_fer.engines.select import load_engine
    from stream_fer.train.checkpoint import load_model
    from stream_fer.train.evaluate import predict

    model, state = load_model(DEFAULT / CHECKPOINT_FILENAME)
    assert state["format"] == "stream-fer-checkpoint"
    engine = load_engine(DEFAULT, backend="onnxruntime-cpu")
    out = engine.infer(real_faces)
    probs, attention, cams = predict(model, real_faces)
    assert np.abs(out.probs - probs).max() < 1e-4
    assert np.abs(out.attention - attention).max() < 1e-4
    assert (out.probs.argmax(1) == probs.argmax(1)).all()


def test_eval_json_is_what_the_eval_command_produces(tmp_path):
    from stream_fer.train.paths import ferplus_source

    if not ferplus_source().exists():
        pytest.skip(f"FER+ not found at {ferplus_source()} (set STREAM_FER_SHARED or STREAM_FER_FERPLUS)")
    shipped = json.loads((DEFAULT / "eval.json").read_text())
    assert shipped["split"] == "test" and shipped["n"] == 3361  # the whole test split, majority labels
    sample = shipped["sample"]
    out = tmp_path / "sample.json"
    proc = subprocess.run(
        [sys.executable, "-m", "train", "eval", "--checkpoint", str(DEFAULT / CHECKPOINT_FILENAME), "--split",
         "test", "--limit", str(sample["limit"]), "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(out.read_text())
    # the default model was trained on the product's aligned crops, and eval feeds it those unless told otherwise
    assert fresh["inputs"] == shipped["inputs"] == "aligned"
    assert fresh["n"] == sample["n"]
    assert fresh["confusion"] == sample["confusion"]
    assert fresh["accuracy"] == pytest.approx(sample["accuracy"], abs=1e-9)
    assert fresh["macro_f1"] == pytest.approx(sample["macro_f1"], abs=1e-9)
    # landmarks may be recomputed here rather than read from the cache: allow float-level differences
    assert fresh["att_cos"] == pytest.approx(sample["att_cos"], abs=5e-3)
    assert fresh["cam_cos"] == pytest.approx(sample["cam_cos"], abs=5e-3)
