"""Inference engines: run an exported stream-fer model on ONNX Runtime, TensorRT or PyTorch behind one
interface; build TensorRT engines; the shipped default model (engines/default/).

    from stream_fer.engines import load_engine
    engine = load_engine()             # auto: TensorRT, torch-CUDA, ONNX Runtime-CUDA, ONNX Runtime-CPU
    out = engine.infer(faces)          # faces: (N, 48, 48) uint8 aligned grayscale crops

Importing this package imports neither torch nor onnxruntime; a backend imports its runtime when loaded.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def default_model_dir() -> Path:
    """The model shipped with the package: engines/default/ (model.onnx, model.json)."""
    return DEFAULT_MODEL_DIR


def load_engine(model_dir=None, backend: str = "auto", checkpoint=None, **kwargs):
    """See engines.select.load_engine."""
    from stream_fer.engines.select import load_engine as _load

    return _load(model_dir, backend, checkpoint, **kwargs)


__all__ = ["DEFAULT_MODEL_DIR", "default_model_dir", "load_engine"]
