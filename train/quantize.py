"""INT8 export for ONNX Runtime on the CPU: static quantization of an exported FP32 model.

Weights are INT8 per output channel, activations UINT8 with ranges calibrated (min-max) on real faces,
in ONNX Runtime's QDQ form, which its CPU provider fuses into integer convolutions. Two parts stay in
FP32 because quantizing them costs accuracy for almost no time (measured on the shipped model, FER+
validation: every layer quantized 81.5%, these kept in float 85.2%, FP32 85.0%):

- the first convolution, which sees the normalised pixels and has a single input channel;
- the head: everything that reads the last block's features (the attention mean, the pooling, the
  classifier, the class activation maps and the softmax), so the maps a user sees come from float sums.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from stream_fer.engines.base import INPUT_NAME
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)

CALIBRATION_FACES = 1024  # FER+ training faces, drawn with a fixed seed
CALIBRATION_BATCH = 64


def calibration_faces(n: int = CALIBRATION_FACES, seed: int = 0) -> np.ndarray:
    """`n` FER+ training images (N, 48, 48) uint8 drawn with `seed`, or one clear error without FER+."""
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.paths import ferplus_source

    if not ferplus_source().exists():
        raise StreamFerError("an INT8 export calibrates on FER+ training faces, not found at "
                             f"{ferplus_source()} (set STREAM_FER_FERPLUS)")
    images = load_ferplus()["train"].images
    index = np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False)
    return np.ascontiguousarray(images[np.sort(index)])


def float_nodes(model) -> list[str]:
    """Names of the nodes kept in FP32: the first convolution and every node downstream of the last
    block's features (the input of the node that writes the `attention` output)."""
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    writer = next((n for n in nodes if "attention" in n.output), None)
    if not convs or writer is None:
        raise StreamFerError("not a stream-fer model graph: no convolution or no 'attention' output")
    keep = {convs[0].name}
    tainted = {writer.input[0]}
    for node in nodes:  # the graph is topologically sorted (ONNX requires it)
        if any(i in tainted for i in node.input):
            keep.add(node.name)
            tainted.update(node.output)
    return sorted(keep)


class _Faces:
    """ONNX Runtime's calibration reader over uint8 faces (the graph normalises them itself)."""

    def __init__(self, faces: np.ndarray) -> None:
        batches = [faces[i:i + CALIBRATION_BATCH] for i in range(0, len(faces), CALIBRATION_BATCH)]
        self._it = iter({INPUT_NAME: b.astype(np.float32)[:, None]} for b in batches)

    def get_next(self):
        return next(self._it, None)


def quantize_int8(fp32_onnx: Path, out_onnx: Path, faces: np.ndarray) -> Path:
    """Write the INT8 (QDQ) version of `fp32_onnx` to `out_onnx`, calibrated on `faces` (N, S, S) uint8."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(faces) == 0:
        raise StreamFerError("no faces to calibrate the INT8 export on")
    with tempfile.TemporaryDirectory(prefix=".int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))  # shape inference and graph clean-up
        keep = float_nodes(onnx.load(str(prepared)))
        log.info("INT8: calibrating on %d faces; kept in FP32: %s", len(faces), ", ".join(keep))
        quantize_static(str(prepared), str(out_onnx), _Faces(np.asarray(faces)), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep)
    return Path(out_onnx)
