"""A stand-in for an exported model with the engine interface: cheap, deterministic, no files. It lets the
pipeline, sink and CLI-path tests run without the shipped model (which the CLI tests use where present)."""

from __future__ import annotations

import numpy as np

from engines.base import EngineOutput, ModelInfo, as_model_input, empty_output
from stream_fer.face.classes import CLASS_NAMES

FAKE_INFO = ModelInfo(input_size=48, in_channels=1, class_names=CLASS_NAMES, map_size=12,
                      normalisation={"mean": 0.5, "std": 0.25})


class FakeEngine:
    """Probabilities from the crop's brightness (so they change with the face); attention from the crop."""

    name = "fake-cpu"
    info = FAKE_INFO

    def infer(self, faces: np.ndarray) -> EngineOutput:
        x = as_model_input(faces, self.info)
        n = x.shape[0]
        if n == 0:
            return empty_output(self.info)
        k, m = len(self.info.class_names), self.info.map_size
        mean = x.reshape(n, -1).mean(axis=1) / 255.0
        logits = np.stack([np.cos(mean * (i + 1) * 3.0) for i in range(k)], axis=1).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        s = self.info.input_size // m
        attention = x[:, 0, : m * s, : m * s].reshape(n, m, s, m, s).mean(axis=(2, 4)) / 255.0
        cams = np.repeat(attention[:, None], k, axis=1) * probs[:, :, None, None]
        return EngineOutput(probs.astype(np.float32), attention.astype(np.float32), cams.astype(np.float32))
