"""TensorRT logic that needs no GPU: the engine-cache key, the batch profile, the engine file format
(stale, foreign, damaged files), the cache's rebuild rules, the network flags, and the fallback when
TensorRT is present but fails. TensorRT itself is not installed on the machines these tests run on; where
a test needs a `tensorrt` module it gets a minimal stand-in that implements only what that test reaches."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import sys
import types

import pytest

from stream_fer.engines.base import ModelInfo
from stream_fer.engines.tensorrt_engine import (
    DEFAULT_PROFILE,
    BatchProfile,
    EngineCache,
    EngineKey,
    GpuInfo,
    StaleEngineError,
    network_flags,
    read_engine_file,
    write_engine_file,
)
from stream_fer.errors import StreamFerError

GPU = GpuInfo("NVIDIA GeForce RTX 4090", (8, 9))
KEY = EngineKey.create("ab" * 32, "10.9.0.34", GPU, "fp16", DEFAULT_PROFILE)
INFO = ModelInfo(input_size=48, in_channels=1, class_names=("a",) * 7, map_size=12,
                 normalisation={"mean": 0.5, "std": 0.25})


# ----------------------------------------------------------------------------------------------- key


@pytest.mark.parametrize("field, value", [
    ("model_sha256", "cd" * 32),
    ("tensorrt_version", "11.0.0.12"),
    ("gpu_name", "NVIDIA H100 80GB HBM3"),
    ("compute_capability", "9.0"),
    ("precision", "fp32"),
    ("profile", (1, 8, 32)),
])
def test_cache_key_changes_with_each_component(field, value):
    other = dataclasses.replace(KEY, **{field: value})
    assert other != KEY
    assert other.digest() != KEY.digest()
    assert other.filename() != KEY.filename()
    assert KEY.mismatch(other) and other.mismatch(KEY)


def test_cache_key_is_stable_and_readable():
    same = EngineKey.create("ab" * 32, "10.9.0.34", GpuInfo("NVIDIA GeForce RTX 4090", (8, 9)), "fp16")
    assert same == KEY and same.digest() == KEY.digest()
    assert KEY.filename().startswith("abababababab-fp16-b1-4-32-trt10.9.0.34-sm89-")
    assert KEY.filename().endswith(".engine")
    assert EngineKey.from_dict(KEY.to_dict()) == KEY
    assert KEY.mismatch(KEY) == ""


def test_key_mismatch_names_the_component():
    assert "TensorRT 10.8.0" in KEY.mismatch(dataclasses.replace(KEY, tensorrt_version="10.8.0"))
    assert "H100" in KEY.mismatch(dataclasses.replace(KEY, gpu_name="H100"))
    assert "fp32" in KEY.mismatch(dataclasses.replace(KEY, precision="fp32"))


# ------------------------------------------------------------------------------------------- profile


def test_default_profile_is_1_4_32():
    assert (DEFAULT_PROFILE.min, DEFAULT_PROFILE.opt, DEFAULT_PROFILE.max) == (1, 4, 32)
    assert DEFAULT_PROFILE.shapes(INFO) == ((1, 1, 48, 48), (4, 1, 48, 48), (32, 1, 48, 48))
    assert KEY.profile == (1, 4, 32)


def test_profile_chunks_cover_any_batch():
    assert DEFAULT_PROFILE.chunks(1) == [(0, 1)]
    assert DEFAULT_PROFILE.chunks(32) == [(0, 32)]
    assert DEFAULT_PROFILE.chunks(70) == [(0, 32), (32, 64), (64, 70)]


@pytest.mark.parametrize("lo, opt, hi", [(0, 4, 32), (4, 1, 32), (1, 40, 32)])
def test_invalid_profiles_are_rejected(lo, opt, hi):
    with pytest.raises(ValueError):
        BatchProfile(lo, opt, hi)


# --------------------------------------------------------------------------------------- engine file


def test_engine_file_round_trip(tmp_path):
    path = write_engine_file(tmp_path / "e.engine", KEY, b"PLAN" * 100)
    key, plan = read_engine_file(path, KEY)
    assert key == KEY and plan == b"PLAN" * 100


def test_engine_from_another_tensorrt_version_is_one_clear_error(tmp_path):
    old = dataclasses.replace(KEY, tensorrt_version="10.3.0.26")
    path = write_engine_file(tmp_path / "old.engine", old, b"PLAN")
    with pytest.raises(StaleEngineError) as exc:
        read_engine_file(path, KEY)
    message = str(exc.value)
    assert "TensorRT 10.3.0.26" in message and "TensorRT 10.9.0.34" in message and "build-engine" in message
    assert "\n" not in message
    assert isinstance(exc.value, StreamFerError)


@pytest.mark.parametrize("content, match", [
    (b"\x00\x01raw TensorRT plan bytes", "not a stream-fer TensorRT engine file"),
    (b"", "not a stream-fer TensorRT engine file"),
])
def test_foreign_files_are_rejected(tmp_path, content, match):
    path = tmp_path / "x.engine"
    path.write_bytes(content)
    with pytest.raises(StaleEngineError, match=match):
        read_engine_file(path, KEY)


def test_damaged_engine_files_are_rejected(tmp_path):
    path = write_engine_file(tmp_path / "e.engine", KEY, b"PLAN" * 100)
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # truncated plan
    with pytest.raises(StaleEngineError, match="checksum"):
        read_engine_file(path, KEY)
    path.write_bytes(data[:20] + b"}{" + data[22:])  # damaged header
    with pytest.raises(StaleEngineError, match="damaged header"):
        read_engine_file(path, KEY)


# ---------------------------------------------------------------------------------------------- cache


class _Builds:
    def __init__(self):
        self.count = 0

    def __call__(self) -> bytes:
        self.count += 1
        return f"plan {self.count}".encode()


def test_cache_builds_once_then_reuses(tmp_path):
    cache, build = EngineCache(tmp_path), _Builds()
    plan, path, built = cache.load_or_build(KEY, build)
    assert built and plan == b"plan 1" and path == tmp_path / KEY.filename() and path.exists()
    plan, path2, built = cache.load_or_build(KEY, build)
    assert not built and plan == b"plan 1" and path2 == path and build.count == 1
    plan, _, built = cache.load_or_build(KEY, build, force=True)
    assert built and plan == b"plan 2"


def test_cache_keeps_one_engine_per_key(tmp_path):
    cache, build = EngineCache(tmp_path), _Builds()
    cache.load_or_build(KEY, build)
    cache.load_or_build(dataclasses.replace(KEY, precision="fp32"), build)
    cache.load_or_build(dataclasses.replace(KEY, tensorrt_version="11.0.0"), build)
    assert build.count == 3 and len(list(tmp_path.glob("*.engine"))) == 3


@pytest.mark.parametrize("stale", ["other_version", "foreign", "damaged"])
def test_stale_foreign_or_damaged_cached_engine_is_rebuilt(tmp_path, stale, caplog):
    cache, build = EngineCache(tmp_path), _Builds()
    path = cache.engine_path(KEY)
    if stale == "other_version":
        write_engine_file(path, dataclasses.replace(KEY, tensorrt_version="10.0.1"), b"old plan")
    elif stale == "foreign":
        path.write_bytes(b"some other program's file")
    else:
        write_engine_file(path, KEY, b"good plan")
        path.write_bytes(path.read_bytes()[:-3])
    plan, _, built = cache.load_or_build(KEY, build)
    assert built and plan == b"plan 1"
    assert read_engine_file(path, KEY)[1] == b"plan 1"
    assert "rebuilding" in caplog.text


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path("10.9.0.34", GPU)
    assert a.parent == tmp_path and "10.9.0.34" in a.name and "4090" in a.name and "sm89" in a.name
    assert cache.timing_cache_path("11.0.0", GPU) != a
    assert cache.timing_cache_path("10.9.0.34", GpuInfo("NVIDIA L4", (8, 9))) != a


# ------------------------------------------------------------------------------------ network & fakes


def test_network_flags_strongly_typed_when_available():
    ten = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1))
    eleven = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))
    eight = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0))
    assert network_flags(ten) == 1 << 1
    assert network_flags(eleven) == 1 << 0
    assert network_flags(eight) == 0


def _fake_tensorrt(version="10.9.0.34", builder_error="no CUDA-capable device is detected"):
    """Just enough of a `tensorrt` module to reach the code under test; building fails like a driver
    that cannot see the GPU."""

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class Builder:
        def __init__(self, logger):
            raise RuntimeError(builder_error)

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    return trt


class _FakeCuda:
    name = "fake"

    def gpu(self):
        return GPU


def test_explicit_engine_file_from_another_tensorrt_version_is_one_clear_error(exported_fp16, tmp_path,
                                                                             monkeypatch):
    import stream_fer.engines.tensorrt_engine as te
    from stream_fer.engines.base import file_sha256

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.9.0.34"))
    monkeypatch.setattr(te, "cuda_runtime", lambda: _FakeCuda())
    key = EngineKey.create(file_sha256(exported_fp16 / "model.onnx"), "10.8.0.43", GPU, "fp16")
    path = write_engine_file(tmp_path / "model.engine", key, b"plan built elsewhere")
    with pytest.raises(StaleEngineError, match="built with TensorRT 10.8.0.43; this is TensorRT 10.9.0.34"):
        te.TensorRTEngine(exported_fp16, cache_dir=tmp_path, engine_file=path)


def test_auto_falls_back_when_tensorrt_fails(exported_fp32, tiny_checkpoint, tmp_path, monkeypatch):
    """A machine that looks like it has an NVIDIA GPU and TensorRT, where TensorRT cannot build, PyTorch
    has no CUDA and onnxruntime has no CUDA provider: auto ends on ONNX Runtime CPU and says why."""
    import stream_fer.engines.tensorrt_engine as te
    from stream_fer.engines import load_engine, select

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(te, "cuda_runtime", lambda: _FakeCuda())
    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: True)
    if select.installed("torch"):
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reported = []
    engine = load_engine(exported_fp32, checkpoint=tiny_checkpoint, cache_dir=tmp_path, report=reported.append)
    assert engine.name == "onnxruntime-cpu"
    # a GPU is present, so the skips are a surprise: the one reported line gives their reasons
    assert len(reported) == 1 and reported[0].startswith("engine: using onnxruntime-cpu")
    assert "skipped although an NVIDIA GPU is present: tensorrt (RuntimeError: no CUDA-capable" in reported[0]
    lines = engine.selection.lines()
    assert lines[0] == "engine: tensorrt skipped: RuntimeError: no CUDA-capable device is detected"
    if select.installed("torch"):
        assert lines[1].startswith("engine: torch-cuda skipped: PyTorch") and "no usable CUDA" in lines[1]
    assert lines[2].startswith("engine: onnxruntime-cuda skipped:") and "no CUDA provider" in lines[2]
    assert lines[3].startswith("engine: onnxruntime-int8 skipped: no INT8 export")
    assert lines[4].startswith("engine: using onnxruntime-cpu")
    assert not list(tmp_path.glob("*.engine"))  # nothing half-built left in the cache


def test_cli_build_engine_without_tensorrt_is_one_line(cli, exported_fp32, tmp_path):
    from stream_fer.engines.select import installed

    if installed("tensorrt"):
        pytest.skip("TensorRT is installed here")
    result = cli("build-engine", "--model", exported_fp32, "--cache-dir", tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0]
