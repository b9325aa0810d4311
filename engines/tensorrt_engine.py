"""The TensorRT backend: an engine built from the exported ONNX model, cached on disk, run with
execute_async_v3 on device buffers bound with set_tensor_address (the TensorRT 10/11 Python API).

- Optimisation profile over the number of faces: min 1, opt 4, max 32 (larger batches run in chunks).
- Precision comes from the ONNX model: an FP16 export (FP16 inside, FP32 at the boundaries) parsed into a
  strongly typed network. TensorRT 10 needs the STRONGLY_TYPED creation flag for that; TensorRT 11 is
  always strongly typed (the flag is accepted and ignored there) and has no FP16 builder flag at all, so
  this one code path serves both.
- A timing cache file per TensorRT version and GPU makes rebuilds fast.
- The engine cache is keyed by the ONNX file's sha256, the TensorRT version, the GPU name and compute
  capability, the precision and the profile. Each engine file starts with a small header carrying that
  key, so a stale, foreign or corrupt file is recognised before TensorRT sees it; in the cache such a
  file is rebuilt, while an engine file named explicitly is a StreamFerError saying what does not match.

Device memory and streams come from cuda-python (the `cuda-python` package, as in NVIDIA's own TensorRT
samples) or, where that is not installed, from PyTorch's CUDA allocator.

Nothing here was run on a GPU in this repository's CI (TensorRT cannot be installed there); the key,
profile, engine-file and cache logic is unit-tested without one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stream_fer.engines.base import (
    INPUT_NAME,
    OUTPUT_NAMES,
    EngineOutput,
    ModelInfo,
    as_model_input,
    empty_output,
    file_sha256,
    model_files,
)
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

ENGINE_MAGIC = b"STREAMFER-TRT\x00"
ENGINE_FORMAT = 1
WORKSPACE_BYTES = 1 << 30


class StaleEngineError(StreamFerError):
    """An engine file that does not belong to this model, TensorRT version, GPU, precision or profile."""


# ------------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile over the batch (number of faces) dimension."""

    min: int = 1
    opt: int = 4
    max: int = 32

    def __post_init__(self):
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError("a batch profile needs 1 <= min <= opt <= max, "
                             f"got {self.min}/{self.opt}/{self.max}")

    def shapes(self, info: ModelInfo) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes for set_shape."""
        tail = (info.in_channels, info.input_size, info.input_size)
        return (self.min, *tail), (self.opt, *tail), (self.max, *tail)

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """[start, stop) slices of a batch of n faces, each within the profile (n >= 1)."""
        return [(i, min(i + self.max, n)) for i in range(0, n, self.max)]

    def label(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"


DEFAULT_PROFILE = BatchProfile()


# ----------------------------------------------------------------------------------------------- key


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. Equal keys: the engine can be reused."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"
    precision: str  # from the ONNX model: "fp32" or "fp16"
    profile: tuple[int, int, int]  # (min, opt, max) faces

    @classmethod
    def create(cls, model_sha256: str, tensorrt_version: str, gpu: GpuInfo, precision: str,
               profile: BatchProfile = DEFAULT_PROFILE) -> EngineKey:
        return cls(model_sha256, str(tensorrt_version), gpu.name, gpu.sm, precision,
                   (profile.min, profile.opt, profile.max))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["profile"] = list(self.profile)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EngineKey:
        return cls(str(d["model_sha256"]), str(d["tensorrt_version"]), str(d["gpu_name"]),
                   str(d["compute_capability"]), str(d["precision"]), tuple(int(v) for v in d["profile"]))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def filename(self) -> str:
        """Readable and unique: model-precision-profile-trt-sm-digest.engine"""
        lo, opt, hi = self.profile
        return (f"{self.model_sha256[:12]}-{self.precision}-b{lo}-{opt}-{hi}"
                f"-trt{_slug(self.tensorrt_version)}"
                f"-sm{self.compute_capability.replace('.', '')}-{self.digest()}.engine")

    def mismatch(self, other: EngineKey) -> str:
        """'' when equal, else a sentence naming the first component that differs (other = the file's)."""
        checks = [("tensorrt_version", "built with TensorRT {theirs}; this is TensorRT {ours}"),
                  ("gpu_name", "built for the GPU {theirs}; this is {ours}"),
                  ("compute_capability", "built for compute capability {theirs}; this GPU has {ours}"),
                  ("model_sha256", "built from another model (sha256 {theirs:.12}); this one is {ours:.12}"),
                  ("precision", "built in {theirs}; this model is {ours}"),
                  ("profile", "built for batch profile {theirs}; this one is {ours}")]
        for field, sentence in checks:
            ours, theirs = getattr(self, field), getattr(other, field)
            if ours != theirs:
                return sentence.format(ours=ours, theirs=theirs)
        return ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "x"


# --------------------------------------------------------------------------------------- engine file


def write_engine_file(path: Path, key: EngineKey, plan: bytes) -> Path:
    """MAGIC, u32 header length, JSON header {format, key, plan_sha256}, then the serialized plan; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = bytes(plan)
    header = json.dumps({"format": ENGINE_FORMAT, "key": key.to_dict(),
                         "plan_sha256": hashlib.sha256(plan).hexdigest()}).encode()
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    with open(tmp, "wb") as f:
        f.write(ENGINE_MAGIC + struct.pack("<I", len(header)) + header + plan)
    os.replace(tmp, path)
    return path


def read_engine_file(path: Path, expected: EngineKey | None = None) -> tuple[EngineKey, bytes]:
    """(key, plan) of a stream-fer engine file; StaleEngineError when it is not one, is damaged, or its
    key differs from `expected`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StaleEngineError(f"cannot read engine file {path}: {exc.strerror or exc}") from None
    n = len(ENGINE_MAGIC)
    if not data.startswith(ENGINE_MAGIC) or len(data) < n + 4:
        raise StaleEngineError(f"{path} is not a stream-fer TensorRT engine file (build one with "
                               "`stream-fer build-engine`)")
    (length,) = struct.unpack("<I", data[n:n + 4])
    try:
        header = json.loads(data[n + 4:n + 4 + length])
        key = EngineKey.from_dict(header["key"])
        fmt = int(header["format"])
        plan_sha = str(header["plan_sha256"])
    except (ValueError, KeyError, TypeError):
        raise StaleEngineError(f"{path} has a damaged header; rebuild it with "
                               "`stream-fer build-engine`") from None
    if fmt != ENGINE_FORMAT:
        raise StaleEngineError(f"{path} is engine file format {fmt}; this stream-fer reads {ENGINE_FORMAT}")
    plan = data[n + 4 + length:]
    if hashlib.sha256(plan).hexdigest() != plan_sha:
        raise StaleEngineError(f"{path} is truncated or damaged (plan checksum mismatch); rebuild it")
    if expected is not None:
        why = expected.mismatch(key)
        if why:
            raise StaleEngineError(f"engine {path} was {why}: rebuild it with `stream-fer build-engine`")
    return key, plan


class EngineCache:
    """Serialized engines and timing caches under one folder (default: <stream-fer cache>/tensorrt)."""

    def __init__(self, root: Path | None = None):
        if root is None:
            from stream_fer.paths import cache_dir

            root = cache_dir() / "tensorrt"
        self.root = Path(root)

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / key.filename()

    def timing_cache_path(self, tensorrt_version: str, gpu: GpuInfo) -> Path:
        sm = gpu.sm.replace(".", "")
        return self.root / f"timing-trt{_slug(tensorrt_version)}-{_slug(gpu.name)}-sm{sm}.cache"

    def load_or_build(self, key: EngineKey, build: Callable[[], bytes],
                      force: bool = False) -> tuple[bytes, Path, bool]:
        """(plan, path, built): the cached plan for `key`, or a fresh one from build() written to the cache.
        A file at the key's path that does not match (stale, foreign, damaged) is rebuilt."""
        path = self.engine_path(key)
        if path.exists() and not force:
            try:
                _, plan = read_engine_file(path, key)
                return plan, path, False
            except StaleEngineError as exc:
                log.warning("%s; rebuilding", exc)
        plan = build()
        write_engine_file(path, key, plan)
        return plan, path, True

    def discard(self, key: EngineKey) -> None:
        self.engine_path(key).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ TensorRT


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise StreamFerError(f"TensorRT is not installed ({exc}); install the tensorrt wheel for your CUDA "
                             "version from NVIDIA") from None
    return trt


def network_flags(trt) -> int:
    """STRONGLY_TYPED where the enum has it (TensorRT >= 9; ignored, but harmless, on 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _make_logger(trt):
    """A trt.ILogger that forwards to Python logging and remembers the last error."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.last_error = ""

        def log(self, severity, msg):
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.last_error = str(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def build_plan(trt, onnx_path: Path, info: ModelInfo, profile: BatchProfile, timing_cache: Path | None,
               logger=None) -> bytes:
    """Parse the ONNX model into a strongly typed network and build a serialized engine."""
    logger = logger or _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise StreamFerError(f"TensorRT could not parse {onnx_path}: {errors or 'unknown error'}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [INPUT_NAME]:
        raise StreamFerError(f"{onnx_path} has inputs {names}; expected [{INPUT_NAME!r}]")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_profile = builder.create_optimization_profile()
    lo, opt, hi = profile.shapes(info)
    opt_profile.set_shape(INPUT_NAME, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        try:
            cache = config.create_timing_cache(data)
        except Exception:  # noqa: BLE001 (TensorRT raises its own types)
            cache = None
        if cache is None and data:  # unreadable (another version wrote it): start a fresh one
            log.warning("timing cache %s is not usable; starting a new one", timing_cache)
            cache = config.create_timing_cache(b"")
        if cache is not None:
            config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = getattr(logger, "last_error", "") or "see the TensorRT log above"
        raise StreamFerError(f"TensorRT could not build an engine from {onnx_path}: {detail}")
    if timing_cache is not None and cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = timing_cache.with_name(timing_cache.name + f".{os.getpid()}.part")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, timing_cache)
    return bytes(plan)


# ------------------------------------------------------------------------------------- CUDA runtime


class _CudaPython:
    """Device memory and streams through cuda-python's runtime bindings."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self.name = "cuda-python"

    def _call(self, result):
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise StreamFerError(f"CUDA runtime error: {err}")
        return values[0] if len(values) == 1 else values

    def gpu(self) -> GpuInfo:
        device = self._call(self.rt.cudaGetDevice())
        props = self._call(self.rt.cudaGetDeviceProperties(device))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return GpuInfo(name.rstrip("\x00").strip(), (int(props.major), int(props.minor)))

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(ptr))

    def stream(self):
        return self._call(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def to_device(self, ptr: int, host: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream))

    def to_host(self, host: np.ndarray, ptr: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream))

    def synchronize(self, stream) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream))


class _TorchCuda:
    """The same through PyTorch's CUDA allocator, for machines with torch but without cuda-python."""

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise StreamFerError("PyTorch sees no CUDA GPU")
        self.torch = torch
        self.name = "torch"
        self._buffers = {}

    def gpu(self) -> GpuInfo:
        t = self.torch
        return GpuInfo(t.cuda.get_device_name(), tuple(t.cuda.get_device_capability()))

    def malloc(self, nbytes: int) -> int:
        buf = self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")
        self._buffers[buf.data_ptr()] = buf
        return buf.data_ptr()

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def stream(self):
        return self.torch.cuda.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.cuda_stream)

    def to_device(self, ptr: int, host: np.ndarray, stream) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(host).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(stream):
            self._buffers[ptr][:host.nbytes].copy_(src)

    def to_host(self, host: np.ndarray, ptr: int, stream) -> None:
        with self.torch.cuda.stream(stream):
            data = self._buffers[ptr][:host.nbytes].cpu()
        host.reshape(-1).view(np.uint8)[:] = data.numpy()

    def synchronize(self, stream) -> None:
        stream.synchronize()


def cuda_runtime():
    """cuda-python if installed, else torch's CUDA; StreamFerError naming what to install otherwise."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _TorchCuda()
    except ImportError:
        raise StreamFerError("the TensorRT backend needs cuda-python (pip install cuda-python) or PyTorch "
                             "with CUDA for device memory") from None


# ---------------------------------------------------------------------------------------------- engine


class TensorRTEngine:
    """An exported model folder on TensorRT; the engine comes from the cache or is built (once) on first use.

    engine_file: run this engine file instead of the cache; it must match the model, TensorRT, GPU,
    precision and profile (else StaleEngineError, which names the mismatch)."""

    name = "tensorrt"

    def __init__(self, model_dir, cache_dir: Path | None = None, profile: BatchProfile = DEFAULT_PROFILE,
                 engine_file: Path | None = None, force_build: bool = False):
        trt = import_tensorrt()
        self._trt = trt
        onnx_path, info = model_files(model_dir)
        self.info: ModelInfo = info
        self.model_dir = Path(model_dir)
        self.profile = profile
        self._cuda = cuda_runtime()
        self.gpu = self._cuda.gpu()
        self.key = EngineKey.create(file_sha256(onnx_path), trt.__version__, self.gpu, info.precision,
                                    profile)
        self._logger = _make_logger(trt)
        cache = EngineCache(cache_dir)
        self.built = False
        if engine_file is not None:
            _, plan = read_engine_file(Path(engine_file), self.key)  # a mismatch is the user's error to see
            self.engine_path = Path(engine_file)
            engine = self._deserialize(plan)
            if engine is None:
                raise StaleEngineError(f"TensorRT {trt.__version__} could not load {engine_file}: "
                                       f"{self._logger.last_error or 'unknown error'}")
        else:
            timing = cache.timing_cache_path(trt.__version__, self.gpu)

            def build() -> bytes:
                started = time.perf_counter()
                log.info("building a TensorRT engine for %s (%s, profile %s); this takes a while once",
                         onnx_path, info.precision, profile.label())
                plan = build_plan(trt, onnx_path, info, profile, timing, self._logger)
                log.info("TensorRT engine built in %.1f s", time.perf_counter() - started)
                return plan

            plan, self.engine_path, self.built = cache.load_or_build(self.key, build, force=force_build)
            engine = self._deserialize(plan)
            if engine is None and not self.built:  # passed our header check yet TensorRT refuses it: rebuild
                log.warning("TensorRT could not load cached engine %s (%s); rebuilding", self.engine_path,
                            self._logger.last_error or "unknown error")
                plan, self.engine_path, self.built = cache.load_or_build(self.key, build, force=True)
                engine = self._deserialize(plan)
            if engine is None:
                raise StreamFerError(f"TensorRT could not load the engine it built for {onnx_path}: "
                                     f"{self._logger.last_error or 'unknown error'}")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise StreamFerError("TensorRT could not create an execution context (out of GPU memory?)")
        self._allocate()

    def _deserialize(self, plan: bytes):
        self._runtime = self._trt.Runtime(self._logger)
        return self._runtime.deserialize_cuda_engine(plan)

    def _allocate(self) -> None:
        trt, engine, info = self._trt, self._engine, self.info
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME] or sorted(set(names) - {INPUT_NAME}) != sorted(OUTPUT_NAMES):
            raise StreamFerError(f"the TensorRT engine has tensors {names}; expected {INPUT_NAME!r} and "
                                 f"{list(OUTPUT_NAMES)}")
        for name in names:
            if np.dtype(trt.nptype(engine.get_tensor_dtype(name))) != np.float32:
                raise StreamFerError(f"the TensorRT engine's {name!r} is {engine.get_tensor_dtype(name)}, "
                                     "not float32")
        k, m, s, c = len(info.class_names), info.map_size, info.input_size, info.in_channels
        hi = self.profile.max
        self._shapes = {INPUT_NAME: (c, s, s), "probs": (k,), "attention": (m, m), "cams": (k, m, m)}
        self._host = {name: np.empty((hi, *tail), np.float32) for name, tail in self._shapes.items()}
        self._device = {name: self._cuda.malloc(buf.nbytes) for name, buf in self._host.items()}
        for name, ptr in self._device.items():
            self._context.set_tensor_address(name, ptr)
        self._stream = self._cuda.stream()

    def infer(self, faces: np.ndarray) -> EngineOutput:
        x = as_model_input(faces, self.info)
        n = len(x)
        if n == 0:
            return empty_output(self.info)
        out = {name: np.empty((n, *self._shapes[name]), np.float32) for name in OUTPUT_NAMES}
        cuda, ctx, stream = self._cuda, self._context, self._stream
        for start, stop in self.profile.chunks(n):
            b = stop - start
            if b < self.profile.min:  # only when min > 1: pad the batch up to the profile's minimum
                pad = np.repeat(x[stop - 1:stop], self.profile.min - b, axis=0)
                chunk = np.concatenate([x[start:stop], pad])
            else:
                chunk = x[start:stop]
            host_in = self._host[INPUT_NAME][:len(chunk)]
            host_in[...] = chunk
            if not ctx.set_input_shape(INPUT_NAME, tuple(chunk.shape)):
                raise StreamFerError(f"TensorRT rejected input shape {chunk.shape} "
                                     f"(profile {self.profile.label()})")
            cuda.to_device(self._device[INPUT_NAME], host_in, stream)
            if not ctx.execute_async_v3(cuda.stream_handle(stream)):
                detail = self._logger.last_error or "unknown error"
                raise StreamFerError(f"TensorRT inference failed: {detail}")
            for name in OUTPUT_NAMES:
                cuda.to_host(self._host[name][:len(chunk)], self._device[name], stream)
            cuda.synchronize(stream)
            for name in OUTPUT_NAMES:
                out[name][start:stop] = self._host[name][:b]
        return EngineOutput(out["probs"], out["attention"], out["cams"])

    def close(self) -> None:
        for ptr in getattr(self, "_device", {}).values():
            try:
                self._cuda.free(ptr)
            except Exception:  # noqa: BLE001, S110 (at interpreter exit the CUDA context may be gone)
                pass
        self._device = {}

    def __del__(self):
        self.close()


def build_engine(model_dir, cache_dir: Path | None = None, profile: BatchProfile = DEFAULT_PROFILE,
                 force: bool = False) -> TensorRTEngine:
    """Build (or find in the cache) the engine for an exported model ahead of time; returns it loaded."""
    return TensorRTEngine(model_dir, cache_dir=cache_dir, profile=profile, force_build=force)
