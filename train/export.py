"""Export a training checkpoint to ONNX for the run-time engines (engines/).

The exported graph takes what the run time has: float32 grayscale pixels in [0, 255], shape (N, 1, S, S)
with a dynamic N. Normalisation, the network and the softmax are inside the graph; the outputs are
`probs` (N, K), `attention` (N, h, w) and `cams` (N, K, h, w), all float32.

FP16 export: the network's weights and arithmetic are FP16 and the graph casts at its boundaries (FP32
pixels in, FP32 outputs out), so precision is a property of the model file. A strongly typed TensorRT
network (TensorRT 10 with the STRONGLY_TYPED flag, TensorRT 11 always) then builds FP16 kernels without
the FP16 builder flag that TensorRT 11 removed.

Every export checks itself: ONNX Runtime against PyTorch (FP32 eager) on real aligned faces (FER+ test
images and, where the development data is present, aligned crops of the video stills). FP32 must agree
within 1e-4 (max absolute difference over all three outputs); FP16 must give the same argmax on every face
and an attention cosine of at least 0.999 on every face. The numbers go into model.json ("export_check").
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stream_fer.engines.base import INPUT_NAME, META_FILENAME, ONNX_FILENAME, OUTPUT_NAMES, ModelInfo
from stream_fer.errors import StreamFerError
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.model_files import file_sha256
from stream_fer.train.checkpoint import load_model
from stream_fer.train.model import AUNet, merge_mirrored, with_mirror

log = logging.getLogger(__name__)

OPSET = 18  # >= 17 (TensorRT 10/11, ONNX Runtime 1.16+); 18 is the dynamo exporter's lowest
FP32_TOLERANCE = 1e-4
FP16_MIN_ATTENTION_COSINE = 0.999
# INT8 rounds every activation, so near-ties flip and maps move a little: the check asks for the same class on
# nearly every face and attention maps that keep their shape on average (the shipped model, FER+ validation:
# 99.1% agreement, mean attention cosine 0.9995).
INT8_MIN_AGREEMENT = 0.97
INT8_MIN_MEAN_ATTENTION_COSINE = 0.998
FERPLUS_CHECK_FACES = 256  # FER+ test images used by the self-check (the first ones, deterministic)


class ExportWrapper(nn.Module):
    """pixels [0, 255] float32 (N, C, S, S) -> (probs, attention, cams), float32.

    With dtype=torch.float16 the network runs in FP16; the input is normalised in FP32 and cast once, and
    the three outputs are cast back to FP32 before the softmax (boundary casts only).

    conv_cams=True computes the same outputs as AUNet.forward from AUNet.features, with the CAMs as a 1x1
    convolution by the classifier weights instead of the einsum in forward(): Conv is the most widely
    supported and best fused ONNX op (TensorRT, ONNX Runtime), Einsum is not. The export check compares
    the exported graph with AUNet.forward itself, so the two cannot drift apart unnoticed."""

    def __init__(self, model: AUNet, dtype: torch.dtype = torch.float32, conv_cams: bool = True):
        super().__init__()
        self.model = model.to(dtype).eval()
        self.dtype = dtype
        self.conv_cams = conv_cams
        config = model.config
        self.scale = 1.0 / (255.0 * config.std)
        self.shift = config.mean / config.std

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (faces * self.scale - self.shift).to(self.dtype)
        if self.conv_cams:
            flip = self.model.flips()
            feats = self.model.features(with_mirror(x) if flip else x)
            fc = self.model.fc
            attention = feats.mean(dim=1)
            logits = fc(feats.mean(dim=(2, 3)))  # dropout is the identity in eval mode
            cams = F.conv2d(feats, fc.weight[:, :, None, None], fc.bias)
            if flip:
                logits, attention, cams = merge_mirrored(logits, attention, cams)
        else:
            logits, attention, cams = self.model(x)
        return torch.softmax(logits.float(), dim=1), attention.float(), cams.float()


def model_info(model: AUNet, precision: str, checkpoint_sha256: str = "", onnx_sha256: str = "",
               export_check: dict | None = None) -> ModelInfo:
    c = model.config
    if len(CLASS_NAMES) != c.num_classes:
        raise StreamFerError(f"the model has {c.num_classes} classes, stream-fer knows {len(CLASS_NAMES)}")
    return ModelInfo(input_size=c.input_size, in_channels=c.in_channels, class_names=tuple(CLASS_NAMES),
                     map_size=model.map_size, normalisation={"mean": c.mean, "std": c.std},
                     precision=precision, source_checkpoint_sha256=checkpoint_sha256, onnx_sha256=onnx_sha256,
                     opset=OPSET, export_check=export_check or {})


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs a warning per missing torchvision op and a FutureWarning from torch's own
    pytree code: noise for this model, which uses none of them."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: AUNet, path: Path, fp16: bool = False) -> Path:
    """Write the ONNX graph of `model` (already in eval mode) to `path` as a single file."""
    wrapper = ExportWrapper(model, torch.float16 if fp16 else torch.float32).eval()
    c = model.config
    example = torch.rand(2, c.in_channels, c.input_size, c.input_size) * 255.0  # batch 2: no 0/1 specialising
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes={"faces": {0: batch}}, verbose=False)
        program.save(str(path), external_data=False)  # one self-contained file (the weights are ~2 MB)
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [INPUT_NAME] or tuple(names_out) != OUTPUT_NAMES:
        raise StreamFerError(f"exported graph has inputs {names_in} and outputs {names_out}, "
                             f"expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
    return path


# ---------------------------------------------------------------------------------------------- faces


def ferplus_faces(limit: int = FERPLUS_CHECK_FACES) -> np.ndarray:
    """The first `limit` FER+ test images (N, 48, 48) uint8; empty when FER+ is not available here."""
    from stream_fer.train.data import load_ferplus
    from stream_fer.train.paths import ferplus_source

    if not ferplus_source().exists():
        return np.zeros((0, 48, 48), np.uint8)
    try:
        return np.ascontiguousarray(load_ferplus()["test"].images[:limit])
    except StreamFerError as exc:
        log.warning("FER+ test images not available for the export check: %s", exc)
        return np.zeros((0, 48, 48), np.uint8)


def still_faces(stills_dir: Path | None = None, size: int = 48, max_faces: int = 2) -> np.ndarray:
    """Aligned grayscale crops (N, size, size) uint8 of every face in the PNG stills of `stills_dir`
    (default: shared/videos/stills); empty when the stills or the landmark model are not available."""
    import cv2

    from stream_fer.face.alignment import alignment_matrix
    from stream_fer.images import read_rgb
    from stream_fer.landmarks import Landmarker
    from stream_fer.train.paths import shared_dir

    stills_dir = Path(stills_dir) if stills_dir else shared_dir() / "videos" / "stills"
    paths = sorted(stills_dir.glob("*.png")) if stills_dir.is_dir() else []
    if not paths:
        return np.zeros((0, size, size), np.uint8)
    try:
        landmarker = Landmarker(mode="image", max_faces=max_faces)
    except StreamFerError as exc:
        log.warning("stills not used for the export check: %s", exc)
        return np.zeros((0, size, size), np.uint8)
    crops = []
    with landmarker:
        for path in paths:
            rgb = read_rgb(path)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            for face in landmarker.detect(rgb):
                m = alignment_matrix(face.points, size=size)
                crops.append(cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE))
    return np.stack(crops) if crops else np.zeros((0, size, size), np.uint8)


def reference_faces() -> tuple[np.ndarray, dict]:
    """Real faces for the export check and a note of where they came from."""
    fer = ferplus_faces()
    stills = still_faces()
    faces = np.concatenate([fer, stills]) if len(fer) or len(stills) else np.zeros((0, 48, 48), np.uint8)
    return faces, {"ferplus_test": len(fer), "stills": len(stills)}


# ---------------------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class ParityReport:
    precision: str
    faces: int
    sources: dict
    max_abs_diff: dict  # output name -> max |onnx - torch|
    argmax_agreement: float  # fraction of faces with the same predicted class
    min_attention_cosine: float
    passed: bool
    failure: str = ""
    mean_attention_cosine: float = 1.0

    def lines(self) -> list[str]:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        src = ", ".join(f"{v} {k}" for k, v in self.sources.items() if v) or "none"
        return [f"export check ({self.precision}, ONNX Runtime vs PyTorch FP32 on {self.faces} faces: {src})",
                f"  max abs diff: {diffs}",
                (f"  argmax agreement {self.argmax_agreement:.4f}, "
                 f"min attention cosine {self.min_attention_cosine:.7f} (mean {self.mean_attention_cosine:.7f}) "
                 f"-> {'passed' if self.passed else 'FAILED: ' + self.failure}")]


def _torch_reference(model: AUNet, faces: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """AUNet.forward in FP32 on the CPU, with the documented input normalisation and a softmax."""
    from stream_fer.train.model import normalise

    model = model.float().eval()
    outs = [[], [], []]
    with torch.inference_mode():
        for i in range(0, len(faces), batch):
            # np.array copies: normalise divides in place
            x = normalise(torch.from_numpy(np.array(faces[i:i + batch])), model.config)
            logits, attention, cams = model(x)
            for acc, y in zip(outs, (torch.softmax(logits, dim=1), attention, cams)):
                acc.append(y.numpy())
    return [np.concatenate(o) for o in outs]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # two all-zero maps agree perfectly; one zero map against a non-zero one does not
    both_zero = (np.abs(a).sum(1) + np.abs(b).sum(1)) == 0
    return np.where(den > 0, num / np.maximum(den, 1e-30), np.where(both_zero, 1.0, 0.0))


def check_export(model: AUNet, model_dir: Path, faces: np.ndarray,
                 sources: dict | None = None) -> ParityReport:
    """Run the exported model on ONNX Runtime (CPU) and the checkpoint on PyTorch FP32; compare."""
    from stream_fer.engines.onnxruntime_engine import OnnxRuntimeEngine

    if len(faces) == 0:
        raise StreamFerError("no faces to check the export on")
    model = model.float().eval()
    engine = OnnxRuntimeEngine(model_dir, device="cpu")
    precision = engine.info.precision
    ref = _torch_reference(model, faces)
    got = [[], [], []]
    for i in range(0, len(faces), 64):
        out = engine.infer(faces[i:i + 64])
        for acc, y in zip(got, (out.probs, out.attention, out.cams)):
            acc.append(y)
    got = [np.concatenate(g) for g in got]
    diffs = {name: float(np.abs(g - r).max()) for name, g, r in zip(OUTPUT_NAMES, got, ref)}
    agree = float((got[0].argmax(1) == ref[0].argmax(1)).mean())
    cosines = _cosines(got[1], ref[1])
    cos, mean_cos = float(cosines.min()), float(cosines.mean())
    failure = ""
    if precision == "int8":
        if agree < INT8_MIN_AGREEMENT:
            failure = f"argmax agreement {agree:.4f} < {INT8_MIN_AGREEMENT}"
        elif mean_cos < INT8_MIN_MEAN_ATTENTION_COSINE:
            failure = f"mean attention cosine {mean_cos:.6f} < {INT8_MIN_MEAN_ATTENTION_COSINE}"
    elif precision == "fp32":
        worst = max(diffs, key=diffs.get)
        if diffs[worst] > FP32_TOLERANCE:
            failure = f"{worst} differs by {diffs[worst]:.2e} > {FP32_TOLERANCE:g}"
    else:
        if agree < 1.0:
            differ = got[0].argmax(1) != ref[0].argmax(1)
            top2 = np.sort(ref[0][differ], axis=1)[:, -2:]
            failure = (f"argmax differs on {int(differ.sum())} of {len(faces)} faces (their FP32 top-two "
                       f"probability margin is at most {float((top2[:, 1] - top2[:, 0]).max()):.1e})")
        elif cos < FP16_MIN_ATTENTION_COSINE:
            failure = f"attention cosine {cos:.6f} < {FP16_MIN_ATTENTION_COSINE}"
    return ParityReport(precision, len(faces), dict(sources or {}), diffs, agree, cos, not failure, failure, mean_cos)


# ---------------------------------------------------------------------------------------------- export


def _write_json_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_checkpoint(checkpoint, out_dir, fp16: bool = False, faces: np.ndarray | None = None,
                      check: bool = True, int8: bool = False, calibration: np.ndarray | None = None) -> Path:
    """Export `checkpoint` to out_dir/model.onnx + out_dir/model.json and check it; returns out_dir.

    `int8`: static INT8 quantization for the CPU (train/quantize.py), calibrated on `calibration` (N, S, S)
    uint8, by default FER+ training faces. `faces` (N, S, S) uint8 overrides the real faces the check runs on.
    The files are written to a temporary folder first and moved into place only when the check passes; a failed check is a
    StreamFerError and leaves out_dir as it was."""
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    if fp16 and int8:
        raise StreamFerError("choose one of --fp16 and --int8")
    model, _ = load_model(checkpoint)
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    ckpt_sha = file_sha256(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        tmp = Path(tmp)
        onnx_path = export_onnx(model, tmp / ONNX_FILENAME, fp16=fp16)
        if int8:
            from stream_fer.train.quantize import calibration_faces, quantize_int8

            fp32_path = onnx_path.rename(tmp / "fp32.onnx")
            calibration = calibration_faces() if calibration is None else np.asarray(calibration)
            quantize_int8(fp32_path, onnx_path, calibration)
        # a fresh copy for the reference: export_onnx may have cast the weights to FP16
        model, _ = load_model(checkpoint)
        info = model_info(model, precision, ckpt_sha, file_sha256(onnx_path))
        (tmp / META_FILENAME).write_text(info.to_json())
        if check:
            if faces is None:
                faces, sources = reference_faces()
                if len(faces) == 0:
                    raise StreamFerError("no real faces to check the export on: FER+ and the stills were not "
                                         "found (set STREAM_FER_SHARED or STREAM_FER_FERPLUS)")
            else:
                faces, sources = np.asarray(faces), {"given": len(faces)}
            report = check_export(model, tmp, faces, sources)
            for line in report.lines():
                log.info(line)
            if not report.passed:
                raise StreamFerError(f"export check failed for {checkpoint} ({precision}): {report.failure}")
            check_record = {k: v for k, v in asdict(report).items() if k not in ("failure",)}
            info = model_info(model, precision, ckpt_sha, info.onnx_sha256, check_record)
            (tmp / META_FILENAME).write_text(info.to_json())
        os.replace(onnx_path, out_dir / ONNX_FILENAME)
        _write_json_atomic(out_dir / META_FILENAME, (tmp / META_FILENAME).read_text())
    return out_dir
