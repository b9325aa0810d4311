"""stream-fer: real-time, interpretable facial-expression analysis for video.

    import stream_fer
    res = stream_fer.analyze("clip.mp4", parquet="clip.parquet")   # or a URL, webcam index, image, frames
    df = res.to_pandas()                                           # one typed row per face per frame
    with stream_fer.Analyzer() as a:                               # your own frame loop
        result = a.process(rgb)
    df = stream_fer.read_results("clip.parquet")                   # what the CLI wrote (also CSV, JSONL)

Importing the package is light: the names below load their modules (and ONNX Runtime, MediaPipe, pandas)
only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Analyzer", "AnalysisInterrupted", "FaceResult", "FrameResult", "Results", "StreamFerError",
           "__version__", "analyze", "read_results"]

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "analyze": "stream_fer.api",
    "Analyzer": "stream_fer.api",
    "Results": "stream_fer.api",
    "AnalysisInterrupted": "stream_fer.api",
    "read_results": "stream_fer.results",
    "StreamFerError": "stream_fer.errors",
    "FrameResult": "stream_fer.frames",
    "FaceResult": "stream_fer.frames",
}

if TYPE_CHECKING:
    from stream_fer.api import AnalysisInterrupted, Analyzer, Results, analyze
    from stream_fer.errors import StreamFerError
    from stream_fer.frames import FaceResult, FrameResult
    from stream_fer.results import read_results


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_fer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
