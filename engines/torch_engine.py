"""The PyTorch backend: the training checkpoint itself, eager. CUDA in FP16 where a GPU is available (the GPU
fallback when TensorRT is absent), CPU in FP32 otherwise. Importing this module imports torch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from stream_fer.engines.base import EngineOutput, ModelInfo, as_model_input, empty_output
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    return torch.cuda.is_available()


class TorchEngine:
    """device: "auto" (CUDA if available), "cuda" or "cpu". fp16: None means FP16 on CUDA, FP32 on CPU."""

    def __init__(self, checkpoint, device: str = "auto", fp16: bool | None = None,
                 threads: int | None = None):
        from stream_fer.model_files import file_sha256
        from stream_fer.train.checkpoint import load_model
        from stream_fer.train.export import ExportWrapper, model_info

        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
        if device == "cuda" and not cuda_available():
            raise StreamFerError(f"PyTorch {torch.__version__} sees no CUDA GPU")
        if fp16 is None:
            fp16 = device == "cuda"
        if threads:
            torch.set_num_threads(int(threads))
        checkpoint = Path(checkpoint)
        model, _ = load_model(checkpoint)  # StreamFerError for a missing, unreadable or mismatching file
        precision = "fp16" if fp16 else "fp32"
        self.info: ModelInfo = model_info(model, precision, file_sha256(checkpoint))
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.name = f"torch-{device}"
        # conv_cams=False: AUNet.forward exactly as trained
        self._module = ExportWrapper(model, self.dtype, conv_cams=False).to(self.device).eval()

    @torch.inference_mode()
    def infer(self, faces: np.ndarray) -> EngineOutput:
        x = as_model_input(faces, self.info)
        if len(x) == 0:
            return empty_output(self.info)
        t = torch.from_numpy(x).to(self.device, non_blocking=True)
        probs, attention, cams = self._module(t)
        return EngineOutput(probs.cpu().numpy(), attention.cpu().numpy(), cams.cpu().numpy())
