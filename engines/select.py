"""Pick and load an engine by name, or the fastest one this machine can run.

auto: TensorRT, then PyTorch on CUDA (FP16), then ONNX Runtime on CUDA, then ONNX Runtime on the CPU: the
model folder's INT8 export when it has one of the same checkpoint (about half the CPU per face, accuracy
unchanged within a few tenths of a point: engines/default/MODEL_CARD.md), else its FP32 model.
The choice is reported in one line; the reasons the faster backends were skipped are added to it only when
they are a surprise (an NVIDIA GPU is present, or a backend failed to start):

    engine: using onnxruntime-cpu (engines/default/int8, int8)
    engine: using onnxruntime-cpu (engines/default, fp32); skipped although an NVIDIA GPU is present:
        tensorrt (TensorRT is not installed), ...          (one line, wrapped here)

The full selection, one line per skipped backend with its reason, goes to the `engines.select` logger at INFO
(`stream-fer -v` shows it); the one line goes to `report` when given (the CLI prints it), else to the logger.
Nothing here imports torch unless a torch backend is asked for, or auto finds an NVIDIA GPU and a torch
install and gets as far as the torch-cuda candidate.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_fer.engines.base import CHECKPOINT_FILENAME, META_FILENAME, ONNX_FILENAME, Engine, ModelInfo
from stream_fer.engines.pair import MirrorPair, mirror_model_dir
from stream_fer.errors import StreamFerError, first_line

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "torch-cuda", "onnxruntime-cuda", "onnxruntime-int8", "onnxruntime-cpu")
BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "torch-cpu", "onnxruntime", "onnxruntime-cuda",
            "onnxruntime-cpu", "onnxruntime-int8")
FP16_SUBDIR = "fp16"  # an FP16 export beside an FP32 one; TensorRT prefers it
INT8_SUBDIR = "int8"  # an INT8 export beside an FP32 one; what onnxruntime-int8 runs


@dataclass(frozen=True)
class Selection:
    """What was chosen, and why each faster candidate was not."""

    chosen: str
    detail: str
    skipped: tuple[tuple[str, str], ...] = ()
    gpu_present: bool = False  # an NVIDIA GPU was seen (auto only): every skip is then a surprise
    failed: tuple[str, ...] = ()  # skipped candidates that raised while starting (a surprise anywhere)

    def lines(self) -> list[str]:
        """The full selection: each skipped candidate with its reason, then the choice."""
        return [f"engine: {name} skipped: {why}" for name, why in self.skipped] + \
               [f"engine: using {self.chosen} ({self.detail})"]

    def summary(self) -> str:
        """One line: the choice, plus the reasons for the skips that a user would not expect."""
        line = f"engine: using {self.chosen} ({self.detail})"
        if self.gpu_present and self.skipped:
            return line + "; skipped although an NVIDIA GPU is present: " + \
                ", ".join(f"{name} ({why})" for name, why in self.skipped)
        failures = [(name, why) for name, why in self.skipped if name in self.failed]
        if failures:
            return line + "; " + ", ".join(f"{name} failed to start ({why})" for name, why in failures)
        return line


class _Skip(Exception):
    pass


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is installed and shows a device (checked without importing any CUDA library)."""
    return (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
            or shutil.which("nvidia-smi") is not None)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _export_of_same_checkpoint(sibling: ModelInfo, own: ModelInfo, precision: str) -> bool:
    """`sibling` is a `precision` export made from the checkpoint `own` was made from."""
    return sibling.precision == precision and bool(sibling.source_checkpoint_sha256) \
        and sibling.source_checkpoint_sha256 == own.source_checkpoint_sha256


def tensorrt_model_dir(model_dir: Path) -> Path:
    """The FP16 sibling export (model_dir/fp16) when there is one made from the same checkpoint as
    model_dir's own model, else model_dir itself. (A sibling left over from another checkpoint is ignored.)"""
    model_dir = Path(model_dir)
    fp16 = model_dir / FP16_SUBDIR
    if (fp16 / ONNX_FILENAME).is_file():
        try:
            own = ModelInfo.from_file(model_dir / META_FILENAME)
            sibling = ModelInfo.from_file(fp16 / META_FILENAME)
        except StreamFerError:
            return model_dir
        if own.precision == "fp32" and _export_of_same_checkpoint(sibling, own, "fp16"):
            return fp16
        log.info("ignoring %s: not an FP16 export of the same checkpoint as %s", fp16, model_dir)
    return model_dir


def int8_model_dir(model_dir: Path) -> Path:
    """model_dir itself when it is an INT8 export, else its INT8 sibling (model_dir/int8) when that was made
    from the same checkpoint as model_dir's own model; otherwise one clear error that says how to make one."""
    model_dir = Path(model_dir)
    own = ModelInfo.from_file(model_dir / META_FILENAME)
    if own.precision == "int8":
        return model_dir
    sibling_dir = model_dir / INT8_SUBDIR
    if (sibling_dir / ONNX_FILENAME).is_file():
        if _export_of_same_checkpoint(ModelInfo.from_file(sibling_dir / META_FILENAME), own, "int8"):
            return sibling_dir
        raise StreamFerError(f"{sibling_dir} is not an INT8 export of the same checkpoint as {model_dir}; "
                             f"make one with `stream-fer export --int8 --out {sibling_dir}`")
    raise StreamFerError(f"no INT8 export in {model_dir}: make one with "
                         f"`stream-fer export --checkpoint CKPT --int8 --out {sibling_dir}`")


def _checkpoint_for(model_dir: Path, checkpoint) -> Path | None:
    if checkpoint is not None:
        return Path(checkpoint)
    path = Path(model_dir) / CHECKPOINT_FILENAME
    return path if path.is_file() else None


def _first_line(exc: BaseException) -> str:
    """StreamFerError messages as they are; other exceptions prefixed with their type."""
    line = first_line(exc)
    if isinstance(exc, StreamFerError) or line == type(exc).__name__:
        return line
    return f"{type(exc).__name__}: {line}"


# ------------------------------------------------------------------------------------------ backends


def _tensorrt(model_dir: Path, checkpoint, threads, cache_dir, strict: bool):
    if not strict:
        if not installed("tensorrt"):
            raise _Skip("TensorRT is not installed")
        if not nvidia_gpu_present():
            raise _Skip("no NVIDIA GPU found")
    from stream_fer.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(tensorrt_model_dir(model_dir), cache_dir=cache_dir)


def _torch(device: str):
    def make(model_dir: Path, checkpoint, threads, cache_dir, strict: bool):
        path = _checkpoint_for(model_dir, checkpoint)
        if not strict:
            if device == "cuda" and not nvidia_gpu_present():
                raise _Skip("no NVIDIA GPU found")
            if not installed("torch"):
                raise _Skip("PyTorch is not installed")
            if path is None:
                raise _Skip(f"no checkpoint (give one, or put {CHECKPOINT_FILENAME} in {model_dir})")
        elif not installed("torch"):
            raise StreamFerError("the torch backend needs PyTorch (pip install 'stream-fer[train]')")
        if path is None:
            raise StreamFerError("the torch backend needs a checkpoint: pass one, or put "
                                 f"{CHECKPOINT_FILENAME} in {model_dir}")
        from stream_fer.engines import torch_engine

        if device == "cuda" and not strict and not torch_engine.cuda_available():
            import torch

            raise _Skip(f"PyTorch {torch.__version__} has no usable CUDA")
        return torch_engine.TorchEngine(path, device=device, threads=threads)

    return make


def _onnxruntime(device: str):
    def make(model_dir: Path, checkpoint, threads, cache_dir, strict: bool):
        from stream_fer.engines.onnxruntime_engine import OnnxRuntimeEngine, cuda_provider_available

        if device == "cuda" and not strict:
            if not nvidia_gpu_present():
                raise _Skip("no NVIDIA GPU found")
            if not cuda_provider_available():
                import onnxruntime as ort

                raise _Skip(f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)")
        if device == "auto":
            dev = "cuda" if nvidia_gpu_present() and cuda_provider_available() else "cpu"
            return OnnxRuntimeEngine(model_dir, device=dev, threads=threads)
        return OnnxRuntimeEngine(model_dir, device=device, threads=threads)

    return make


def _onnxruntime_int8(model_dir: Path, checkpoint, threads, cache_dir, strict: bool):
    from stream_fer.engines.onnxruntime_engine import OnnxRuntimeEngine

    try:
        model_dir = int8_model_dir(model_dir)
    except StreamFerError as why:
        if strict:  # asked for by name: the error is the user's answer
            raise
        raise _Skip(str(why)) from None  # auto: the folder's FP32 model runs instead
    return OnnxRuntimeEngine(model_dir, device="cpu", threads=threads)


_FACTORIES = {
    "tensorrt": _tensorrt,
    "torch": _torch("auto"),
    "torch-cuda": _torch("cuda"),
    "torch-cpu": _torch("cpu"),
    "onnxruntime": _onnxruntime("auto"),
    "onnxruntime-cuda": _onnxruntime("cuda"),
    "onnxruntime-cpu": _onnxruntime("cpu"),
    "onnxruntime-int8": _onnxruntime_int8,
}


def _describe(engine) -> str:
    if isinstance(engine, MirrorPair):
        return f"{_describe(engine.crop)}; mirror images read by {_describe(engine.mirror)}"
    where = getattr(engine, "model_dir", None) or getattr(engine, "checkpoint", None)
    return f"{where}, {engine.info.precision}" if where is not None else engine.info.precision


def _with_mirror_model(engine, factory: str, model_dir: Path, checkpoint, threads, cache_dir):
    """The engine paired with model_dir's mirror model (engines/pair.py) on the same backend, when the folder
    has one and no checkpoint was named (a named checkpoint is one network, read as it is)."""
    mirror_dir = mirror_model_dir(model_dir) if checkpoint is None else None
    if mirror_dir is None:
        return engine
    mirror = _FACTORIES[factory](mirror_dir, None, threads, cache_dir, True)
    return MirrorPair(engine, mirror, mirror_dir)


def select_engine(model_dir=None, backend: str = "auto", checkpoint=None, *, threads: int | None = None,
                  cache_dir: Path | None = None, mirror: bool = True) -> tuple[Engine, Selection]:
    """(engine, selection). An explicitly named backend that cannot run is a StreamFerError; auto moves
    on to the next candidate and records why, except for the last (ONNX Runtime on the CPU), whose
    failure (a missing or corrupt model file) is the error the user sees. mirror=False: the folder's mirror
    model (engines/pair.py) is not loaded, for a run that reads each face alone."""
    from stream_fer.engines import default_model_dir

    if backend not in BACKENDS:
        raise StreamFerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()

    def paired(engine, factory: str):
        return _with_mirror_model(engine, factory, model_dir, checkpoint, threads, cache_dir) if mirror else engine

    if backend != "auto":
        engine = paired(_FACTORIES[backend](model_dir, checkpoint, threads, cache_dir, True), backend)
        return engine, Selection(engine.name, _describe(engine))
    skipped, failed = [], []
    for name in AUTO_ORDER:
        last = name == AUTO_ORDER[-1]
        try:
            # The candidate is the folder's model and, where it has one, its mirror model on the same backend:
            # if either cannot start, both move on to the next backend (never one network on each).
            engine = paired(_FACTORIES[name](model_dir, checkpoint, threads, cache_dir, last), name)
        except _Skip as why:
            skipped.append((name, str(why)))
            continue
        except Exception as exc:  # a GPU backend that fails to start must not stop the CPU one
            if last:
                raise
            skipped.append((name, _first_line(exc)))
            failed.append(name)
            log.debug("%s failed", name, exc_info=True)
            continue
        return engine, Selection(engine.name, _describe(engine), tuple(skipped), nvidia_gpu_present(),
                                 tuple(failed))
    raise AssertionError("unreachable: the last candidate either returns or raises")


def load_engine(model_dir=None, backend: str = "auto", checkpoint=None, *, threads: int | None = None,
                cache_dir: Path | None = None, report: Callable[[str], None] | None = None,
                mirror: bool = True) -> Engine:
    """The engine to run: model_dir defaults to the shipped default model (engines/default/). The full
    selection is logged (INFO, one line per skipped candidate); the one-line summary (Selection.summary) goes
    to `report` if given, else to the log. The selection is kept on the engine as `engine.selection`."""
    engine, selection = select_engine(model_dir, backend, checkpoint, threads=threads, cache_dir=cache_dir,
                                      mirror=mirror)
    for line in selection.lines()[:-1]:
        log.info(line)
    if report is not None:
        report(selection.summary())
    else:
        log.info(selection.summary())
    try:
        engine.selection = selection
    except AttributeError:  # an engine class with __slots__: the selection is still logged
        pass
    return engine
