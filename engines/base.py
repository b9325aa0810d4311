"""The one engine interface: a batch of aligned grayscale face crops in; probabilities, attention maps
and class activation maps out. Every backend (ONNX Runtime, TensorRT, PyTorch) implements it.

The exported model takes float32 pixels in [0, 255], shape (N, 1, S, S) with S = ModelInfo.input_size;
normalisation and softmax are part of the graph, so a backend only moves arrays."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.model_files import file_sha256  # noqa: F401  (re-exported: engines hash their files too)

INPUT_NAME = "faces"
OUTPUT_NAMES = ("probs", "attention", "cams")
META_FILENAME = "model.json"
ONNX_FILENAME = "model.onnx"
CHECKPOINT_FILENAME = "checkpoint.pt"  # optional, beside model.onnx: what the torch backend loads
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelInfo:
    """What the run time must know about an exported model (written beside model.onnx as model.json)."""

    input_size: int
    in_channels: int
    class_names: tuple[str, ...]
    map_size: int
    normalisation: dict  # {"mean": m, "std": s} on [0, 1] pixels; already inside the graph
    input_range: tuple[float, float] = (0.0, 255.0)
    precision: str = "fp32"
    source_checkpoint_sha256: str = ""
    onnx_sha256: str = ""
    format_version: int = 1
    opset: int = 0
    export_check: dict = field(default_factory=dict)  # the parity numbers measured at export time

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: Path) -> ModelInfo:
        try:
            d = json.loads(Path(path).read_text())
            d["class_names"] = tuple(d["class_names"])
            d["input_range"] = tuple(d.get("input_range", (0.0, 255.0)))
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            raise StreamFerError(f"model metadata not found: {path}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StreamFerError(f"model metadata {path} is not valid ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class EngineOutput:
    probs: np.ndarray  # (N, K) float32, rows sum to 1
    attention: np.ndarray  # (N, h, w) float32, non-negative
    cams: np.ndarray  # (N, K, h, w) float32


class Engine(Protocol):
    name: str  # "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "torch-cuda", "torch-cpu"
    info: ModelInfo

    def infer(self, faces: np.ndarray) -> EngineOutput:
        """faces: (N, S, S) or (N, 1, S, S) uint8 or float32 grayscale aligned crops, N >= 0."""
        ...


def as_model_input(faces: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(N, 1, S, S) float32 in [0, 255] from uint8/float crops with or without the channel axis."""
    x = np.asarray(faces)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (info.in_channels, info.input_size, info.input_size):
        raise ValueError(f"expected faces of shape (N, {info.input_size}, {info.input_size}), got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def empty_output(info: ModelInfo) -> EngineOutput:
    k, m = len(info.class_names), info.map_size
    return EngineOutput(np.zeros((0, k), np.float32), np.zeros((0, m, m), np.float32),
                        np.zeros((0, k, m, m), np.float32))


def model_files(model_dir) -> tuple[Path, ModelInfo]:
    """(model.onnx path, its ModelInfo) of an exported model folder; one clear error when either is missing
    or the metadata does not describe a model this run time can feed."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StreamFerError(f"model folder not found: {model_dir}")
    onnx_path = model_dir / ONNX_FILENAME
    if not onnx_path.is_file():
        raise StreamFerError(f"no {ONNX_FILENAME} in {model_dir} (create one with `stream-fer export`)")
    info = ModelInfo.from_file(model_dir / META_FILENAME)
    if info.precision not in PRECISIONS:
        raise StreamFerError(f"{model_dir / META_FILENAME}: unknown precision {info.precision!r}")
    if info.input_size <= 0 or info.in_channels != 1 or info.map_size <= 0 or not info.class_names:
        raise StreamFerError(f"{model_dir / META_FILENAME} does not describe a grayscale face model")
    return onnx_path, info

