"""The engine contract for every backend that runs here (ONNX Runtime on the CPU with FP32 and FP16
models, PyTorch on the CPU), the shipped default model, corrupt model files, and auto-selection."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from stream_fer.engines import default_model_dir, load_engine
from stream_fer.engines.base import EngineOutput, ModelInfo
from stream_fer.errors import StreamFerError

REPO_ROOT = default_model_dir().parents[1]


@pytest.fixture(scope="module", params=["onnxruntime-cpu/fp32", "onnxruntime-cpu/fp16", "onnxruntime-int8",
                                        "torch-cpu"])
def engine(request, exported_fp32, exported_fp16, exported_int8, tiny_checkpoint):
    if request.param == "onnxruntime-cpu/fp32":
        return load_engine(exported_fp32, backend="onnxruntime-cpu", threads=1)
    if request.param == "onnxruntime-cpu/fp16":
        return load_engine(exported_fp16, backend="onnxruntime-cpu", threads=1)
    if request.param == "onnxruntime-int8":
        return load_engine(exported_int8, backend="onnxruntime-int8", threads=1)
    pytest.importorskip("torch")
    return load_engine(backend="torch-cpu", checkpoint=tiny_checkpoint, threads=1)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_contract_shapes_dtypes_values(engine, check_faces, n):
    out = engine.infer(check_faces[:n])
    assert isinstance(out, EngineOutput)
    k, m = len(engine.info.class_names), engine.info.map_size
    assert out.probs.shape == (n, k) and out.attention.shape == (n, m, m) and out.cams.shape == (n, k, m, m)
    for a in (out.probs, out.attention, out.cams):
        assert a.dtype == np.float32
    if n:
        np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
        assert (out.probs >= 0).all() and (out.attention >= 0).all()
        assert np.isfinite(out.cams).all()


def test_contract_names_and_info(engine):
    assert engine.name in ("onnxruntime-cpu", "torch-cpu")
    assert isinstance(engine.info, ModelInfo)
    assert engine.info.input_size == 48 and engine.info.map_size == 12 and len(engine.info.class_names) == 7
    assert engine.selection.chosen == engine.name


def test_contract_input_forms(engine, check_faces):
    faces = check_faces[:3]
    a = engine.infer(faces)  # (N, S, S) uint8
    b = engine.infer(faces[:, None].astype(np.float32))  # (N, 1, S, S) float32 in [0, 255]
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    with pytest.raises(ValueError, match="expected faces of shape"):
        engine.infer(np.zeros((2, 64, 64), np.uint8))


def test_batches_larger_than_the_tensorrt_profile(exported_fp32, check_faces):
    engine = load_engine(exported_fp32, backend="onnxruntime-cpu", threads=1)
    faces = np.resize(check_faces, (40, 48, 48))
    out = engine.infer(faces)
    assert out.probs.shape == (40, 7)
    np.testing.assert_allclose(out.probs[:5], engine.infer(faces[:5]).probs, atol=1e-6)


def test_onnxruntime_and_torch_agree_on_real_faces(exported_fp32, tiny_checkpoint, real_faces):
    pytest.importorskip("torch")
    ort_out = load_engine(exported_fp32, backend="onnxruntime-cpu", threads=1).infer(real_faces)
    torch_out = load_engine(backend="torch-cpu", checkpoint=tiny_checkpoint, threads=1).infer(real_faces)
    for a, b in zip((ort_out.probs, ort_out.attention, ort_out.cams),
                    (torch_out.probs, torch_out.attention, torch_out.cams)):
        assert np.abs(a - b).max() <= 1e-4


# ------------------------------------------------------------------------------------- bad model files


def _copy_model(src, dst):
    dst.mkdir(parents=True)
    shutil.copy(src / "model.json", dst / "model.json")
    return dst


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_onnx_is_one_clear_error(exported_fp32, tmp_path, damage):
    bad = _copy_model(exported_fp32, tmp_path / "bad")
    data = (exported_fp32 / "model.onnx").read_bytes()
    content = {"garbage": b"\x00not an onnx model" * 50, "truncated": data[: len(data) // 3],
               "empty": b""}[damage]
    (bad / "model.onnx").write_bytes(content)
    for backend in ("auto", "onnxruntime-cpu"):
        with pytest.raises(StreamFerError, match="is not a usable ONNX model") as exc:
            load_engine(bad, backend=backend)
        assert "\n" not in str(exc.value)


def test_missing_model_files_are_clear_errors(exported_fp32, tmp_path):
    with pytest.raises(StreamFerError, match="model folder not found"):
        load_engine(tmp_path / "nowhere")
    only_json = _copy_model(exported_fp32, tmp_path / "only_json")
    with pytest.raises(StreamFerError, match="no model.onnx"):
        load_engine(only_json)
    only_onnx = tmp_path / "only_onnx"
    only_onnx.mkdir()
    shutil.copy(exported_fp32 / "model.onnx", only_onnx / "model.onnx")
    with pytest.raises(StreamFerError, match="model metadata not found"):
        load_engine(only_onnx)


def test_unknown_backend_is_a_clear_error(exported_fp32):
    with pytest.raises(StreamFerError, match="unknown backend 'cuda'"):
        load_engine(exported_fp32, backend="cuda")


def test_torch_backend_without_checkpoint_says_what_to_do(exported_fp32):
    with pytest.raises(StreamFerError, match="needs a checkpoint"):
        load_engine(exported_fp32, backend="torch-cpu")


# ------------------------------------------------------------------------------------------ selection


def test_auto_selection_on_a_cpu_machine_reports_each_skip(exported_fp32, monkeypatch, caplog):
    """One line for the choice (no GPU: the skips are no surprise); the full selection in the log."""
    from stream_fer.engines import select

    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: False)
    reported = []
    with caplog.at_level("INFO", logger="stream_fer.engines.select"):
        engine = load_engine(exported_fp32, report=reported.append)
    assert engine.name == "onnxruntime-cpu"
    assert len(reported) == 1 and reported[0] == f"engine: using onnxruntime-cpu ({exported_fp32}, fp32)"
    lines = engine.selection.lines()
    assert [line.split(" skipped")[0] for line in lines[:-1]] == [
        "engine: tensorrt", "engine: torch-cuda", "engine: onnxruntime-cuda", "engine: onnxruntime-int8"]
    assert "no INT8 export" in lines[3]
    assert lines[-1].startswith("engine: using onnxruntime-cpu")
    assert [r.getMessage() for r in caplog.records] == lines[:-1]
    if not select.installed("tensorrt"):
        assert "TensorRT is not installed" in lines[0]
    assert "no NVIDIA GPU found" in lines[1] and "no NVIDIA GPU found" in lines[2]
    assert engine.selection.skipped[0][0] == "tensorrt"


def test_auto_selection_does_not_import_torch(exported_fp32):
    code = ("import sys; from engines import load_engine; "
            f"e = load_engine({str(exported_fp32)!r}); "
            "import numpy as np; e.infer(np.zeros((2, 48, 48), np.uint8)); "
            "print(e.name, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    name, imported = result.stdout.split()
    if name == "onnxruntime-cpu":  # on a GPU machine auto may legitimately pick a torch backend
        assert imported == "False"


# --------------------------------------------------------------------------------------- default model


def test_shipped_default_model_runs_and_was_checked():
    model_dir = default_model_dir()
    if not (model_dir / "model.onnx").is_file():
        pytest.skip(f"no default model shipped in {model_dir}")
    from stream_fer.engines.base import file_sha256

    info = ModelInfo.from_file(model_dir / "model.json")
    assert info.onnx_sha256 == file_sha256(model_dir / "model.onnx")
    assert info.export_check.get("passed") is True
    engine = load_engine(model_dir, backend="onnxruntime-cpu", threads=1)
    out = engine.infer(np.full((2, 48, 48), 128, np.uint8))
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)


def test_shipped_fp16_sibling_belongs_to_the_default_model():
    from stream_fer.engines.select import tensorrt_model_dir

    model_dir = default_model_dir()
    if not (model_dir / "fp16" / "model.onnx").is_file():
        pytest.skip(f"no FP16 export shipped in {model_dir / 'fp16'}")
    fp16 = ModelInfo.from_file(model_dir / "fp16" / "model.json")
    assert fp16.precision == "fp16" and fp16.export_check.get("passed") is True
    assert tensorrt_model_dir(model_dir) == model_dir / "fp16"


def test_tensorrt_ignores_an_fp16_sibling_from_another_checkpoint(exported_fp32, exported_fp16, tmp_path):
    from stream_fer.engines.select import tensorrt_model_dir

    model_dir = tmp_path / "m"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(exported_fp16, model_dir / "fp16")
    assert tensorrt_model_dir(model_dir) == model_dir / "fp16"  # same checkpoint: used
    info = ModelInfo.from_file(model_dir / "model.json")
    (model_dir / "model.json").write_text(info.to_json().replace(info.source_checkpoint_sha256, "0" * 64))
    assert tensorrt_model_dir(model_dir) == model_dir  # left over from another checkpoint: ignored


# ------------------------------------------------------------------------------------------------ INT8


def test_auto_runs_the_int8_sibling_of_the_same_checkpoint_and_fp32_otherwise(exported_fp32, exported_int8,
                                                                               tmp_path, monkeypatch):
    from stream_fer.engines import select

    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: False)
    model_dir = tmp_path / "m"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(exported_int8, model_dir / "int8")
    reported = []
    engine = load_engine(model_dir, report=reported.append)
    assert engine.model_dir == model_dir / "int8" and engine.info.precision == "int8"
    assert reported == [f"engine: using onnxruntime-cpu ({model_dir / 'int8'}, int8)"]
    assert load_engine(model_dir, backend="onnxruntime-cpu").info.precision == "fp32"  # asked for by name
    info = ModelInfo.from_file(model_dir / "model.json")
    (model_dir / "model.json").write_text(info.to_json().replace(info.source_checkpoint_sha256, "0" * 64))
    engine = load_engine(model_dir)  # a sibling left over from another checkpoint: the folder's own FP32
    assert engine.model_dir == model_dir and engine.info.precision == "fp32"
    assert "not an INT8 export of the same checkpoint" in dict(engine.selection.skipped)["onnxruntime-int8"]
    with pytest.raises(StreamFerError, match="not an INT8 export of the same checkpoint"):
        load_engine(model_dir, backend="onnxruntime-int8")


def test_a_corrupt_int8_sibling_falls_back_to_fp32_and_says_so(exported_fp32, exported_int8, tmp_path,
                                                                monkeypatch):
    from stream_fer.engines import select

    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: False)
    model_dir = tmp_path / "m"
    shutil.copytree(exported_fp32, model_dir)
    shutil.copytree(exported_int8, model_dir / "int8")
    (model_dir / "int8" / "model.onnx").write_bytes(b"not a model")
    reported = []
    engine = load_engine(model_dir, report=reported.append)
    assert engine.info.precision == "fp32"
    assert "onnxruntime-int8 failed to start" in reported[0] and "not a usable ONNX model" in reported[0]


def test_no_int8_export_asked_for_by_name_says_how_to_make_one(exported_fp32):
    with pytest.raises(StreamFerError, match="stream-fer export .*--int8"):
        load_engine(exported_fp32, backend="onnxruntime-int8")


def test_shipped_int8_sibling_belongs_to_the_default_model_and_is_what_auto_runs_here(monkeypatch):
    from stream_fer.engines import select

    model_dir = default_model_dir()
    if not (model_dir / "int8" / "model.onnx").is_file():
        pytest.skip(f"no INT8 export shipped in {model_dir / 'int8'}")
    int8 = ModelInfo.from_file(model_dir / "int8" / "model.json")
    assert int8.precision == "int8" and int8.export_check.get("passed") is True
    assert int8.export_check["argmax_agreement"] >= 0.97
    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: False)
    engine = load_engine(threads=1)
    assert engine.model_dir == model_dir / "int8"


def test_the_cli_offers_every_backend_the_selector_knows():
    from stream_fer.commands.run import BACKENDS as CLI_BACKENDS
    from stream_fer.engines.select import BACKENDS

    assert CLI_BACKENDS == BACKENDS


def test_the_cli_default_x264_preset_is_the_sinks_default():
    from stream_fer.commands.run import DEFAULT_PRESET as CLI_PRESET
    from stream_fer.sinks import DEFAULT_PRESET

    assert CLI_PRESET == DEFAULT_PRESET
