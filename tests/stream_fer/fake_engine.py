"""A stand-in for an exported model with the engine interface: cheap, deterministic, no files. It lets the
pipeline, sink and CLI-path tests run without the shipped model (which the CLI tests use where present)."""

from __future__ import annotations

import numpy as np

from stream_fer.engines.base import EngineOutput, ModelInfo, as_model_input, empty_output
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


def write_tiny_model(model_dir):
    """An exported-model folder (model.onnx + model.json) with the engine interface and almost no weights:
    probabilities from the crop's mean brightness, attention = the crop average-pooled to 12 x 12, CAMs =
    attention x probability. For CLI runs that must not depend on the shipped model."""
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    info = FAKE_INFO
    k, m, s = len(info.class_names), info.map_size, info.input_size
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = numpy_helper.from_array(np.linspace(-2, 2, k, dtype=np.float32).reshape(1, k), "w")
    scale = numpy_helper.from_array(np.array(1 / 255.0, np.float32), "scale")
    nodes = [
        helper.make_node("Mul", ["faces", "scale"], ["x"]),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean2"]),
        helper.make_node("MatMul", ["mean2", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("AveragePool", ["x"], ["pooled"], kernel_shape=[s // m, s // m], strides=[s // m, s // m]),
        helper.make_node("Squeeze", ["pooled", "axis1"], ["attention"]),
        helper.make_node("Unsqueeze", ["probs", "axes23"], ["probs4"]),
        helper.make_node("Mul", ["pooled", "probs4"], ["cams"]),
    ]
    inits = [weights, scale, numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes23")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, s, s])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["N", m, m]),
         helper.make_tensor_value_info("cams", TensorProto.FLOAT, ["N", k, m, m])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(model_dir / "model.onnx"))
    (model_dir / "model.json").write_text(info.to_json())
    return model_dir
