"""The ONNX Runtime backend: the CPU default everywhere (what CI runs), and CUDA where the installed
onnxruntime build has the CUDA execution provider (the onnxruntime-gpu package)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from stream_fer.engines.base import (
    INPUT_NAME,
    OUTPUT_NAMES,
    EngineOutput,
    ModelInfo,
    as_model_input,
    empty_output,
    model_files,
)
from stream_fer.errors import StreamFerError, first_line

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def import_onnxruntime():
    """onnxruntime, with its usage telemetry off unless the environment already says otherwise. ONNX Runtime 1.32
    on Linux records every session into a local database for upload (~/.cache/Microsoft/DeveloperTools) and
    waits for its uploader's threads at exit: 0.05-0.4 s at the end of every process here, for data this product
    has no business sending. The switch is read once, when the module loads, so it is set before the import."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def cuda_provider_available() -> bool:
    return CUDA_PROVIDER in import_onnxruntime().get_available_providers()


class OnnxRuntimeEngine:
    """An exported model folder (model.onnx + model.json) on ONNX Runtime.

    device: "cpu" or "cuda". threads: intra-op threads (None: ONNX Runtime's default, one per physical
    core); the frame pipeline runs other stages beside this one, so it may want fewer."""

    def __init__(self, model_dir, device: str = "cpu", threads: int | None = None):
        ort = import_onnxruntime()

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
        onnx_path, info = model_files(model_dir)
        self.model_dir = Path(model_dir)
        self.info: ModelInfo = info
        self.device = device
        self.name = f"onnxruntime-{device}"
        if device == "cuda":
            if not cuda_provider_available():
                raise StreamFerError(f"this onnxruntime {ort.__version__} build has no {CUDA_PROVIDER} "
                                     "(install onnxruntime-gpu)")
            providers = [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; a failure reaches the user as a StreamFerError
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 (InvalidProtobuf, InvalidGraph, Fail...: an unusable file)
            raise StreamFerError(f"{onnx_path} is not a usable ONNX model ({first_line(exc)}); "
                                 "export it again with `stream-fer export`") from None
        if device == "cuda" and CUDA_PROVIDER not in self._session.get_providers():
            raise StreamFerError(f"ONNX Runtime could not start {CUDA_PROVIDER} "
                                 "(CUDA or cuDNN libraries missing?)")
        self._check_signature(onnx_path)

    def _check_signature(self, onnx_path: Path) -> None:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if [i.name for i in inputs] != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise StreamFerError(f"{onnx_path} has inputs {[i.name for i in inputs]} and outputs {outputs}; "
                                 f"a stream-fer model has [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
        shape = inputs[0].shape
        want = [self.info.in_channels, self.info.input_size, self.info.input_size]
        if len(shape) != 4 or list(shape[1:]) != want or inputs[0].type != "tensor(float)":
            raise StreamFerError(f"{onnx_path} takes {inputs[0].type} {shape}, but its model.json describes "
                                 f"float (N, {', '.join(map(str, want))})")

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def infer(self, faces: np.ndarray) -> EngineOutput:
        x = as_model_input(faces, self.info)
        if len(x) == 0:
            return empty_output(self.info)
        probs, attention, cams = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return EngineOutput(probs, attention, cams)
