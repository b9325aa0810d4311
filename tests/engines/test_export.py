"""train.export: the ONNX graph's signature, FP32/FP16 round-trip parity against AUNet.forward on real
faces, the metadata beside it, and the errors for unusable checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from stream_fer.engines.base import INPUT_NAME, OUTPUT_NAMES, ModelInfo
from stream_fer.errors import StreamFerError


def _reference(checkpoint, faces):
    """AUNet.forward itself (not the export wrapper), FP32, CPU."""
    from stream_fer.train.checkpoint import load_model
    from stream_fer.train.model import normalise

    model, _ = load_model(checkpoint)
    with torch.inference_mode():
        logits, attention, cams = model(normalise(torch.from_numpy(faces.copy()), model.config))
        return torch.softmax(logits, 1).numpy(), attention.numpy(), cams.numpy()


def _onnx_run(model_dir, faces):
    from stream_fer.engines.onnxruntime_engine import OnnxRuntimeEngine

    out = OnnxRuntimeEngine(model_dir, threads=1).infer(faces)
    return out.probs, out.attention, out.cams


def _cosine_per_face(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_round_trip_matches_pytorch_on_real_faces(exported_fp32, tiny_checkpoint, real_faces):
    ref = _reference(tiny_checkpoint, real_faces)
    got = _onnx_run(exported_fp32, real_faces)
    for name, r, g in zip(OUTPUT_NAMES, ref, got):
        assert g.shape == r.shape, name
        assert np.abs(g - r).max() <= 1e-4, f"{name}: max abs diff {np.abs(g - r).max():.2e}"
    assert len(set(ref[0].argmax(1))) > 1, "the test model should not predict one class for every face"


def test_fp16_round_trip_same_argmax_and_attention_on_real_faces(exported_fp16, tiny_checkpoint, real_faces,
                                                                 decisive_real_faces):
    assert len(decisive_real_faces) >= 0.8 * len(real_faces)
    ref = _reference(tiny_checkpoint, real_faces)
    got = _onnx_run(exported_fp16, real_faces)
    assert _cosine_per_face(got[1], ref[1]).min() >= 0.999  # attention: every face
    assert np.abs(got[0] - ref[0]).max() < 1e-2
    ref = _reference(tiny_checkpoint, decisive_real_faces)  # argmax: every face that is not a near-tie
    got = _onnx_run(exported_fp16, decisive_real_faces)
    assert (got[0].argmax(1) == ref[0].argmax(1)).all()


def test_int8_round_trip_agrees_with_pytorch_on_real_faces(exported_int8, tiny_checkpoint, int8_faces):
    """INT8 rounds activations: the class stays the same on nearly every face that is not a near-tie and the
    attention keeps its shape (the export's own check asks for >= 97% and a mean cosine >= 0.998)."""
    ref = _reference(tiny_checkpoint, int8_faces)
    got = _onnx_run(exported_int8, int8_faces)
    assert (got[0].argmax(1) == ref[0].argmax(1)).mean() >= 0.97
    assert _cosine_per_face(got[1], ref[1]).mean() >= 0.998
    info = ModelInfo.from_file(exported_int8 / "model.json")
    assert info.precision == "int8" and info.export_check["passed"] is True
    assert info.export_check["mean_attention_cosine"] >= 0.998


def test_int8_graph_quantizes_the_body_and_keeps_the_first_convolution_and_the_head_in_float(exported_fp32,
                                                                                            exported_int8):
    from stream_fer.train.quantize import float_nodes

    fp32 = onnx.load(str(exported_fp32 / "model.onnx"))
    kept = float_nodes(fp32)
    writers = {o: n for n in fp32.graph.node for o in n.output}
    first_conv = next(n for n in fp32.graph.node if n.op_type == "Conv")
    assert first_conv.name in kept
    for output in OUTPUT_NAMES:  # every node that writes an output reads float sums
        assert writers[output].name in kept
    assert sum(n.op_type == "Conv" for n in fp32.graph.node if n.name not in kept) >= 6  # the body is not kept
    int8 = onnx.load(str(exported_int8 / "model.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("DequantizeLinear") >= 6 and "QuantizeLinear" in ops
    dequantized = {n.output[0] for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    assert not any(i in dequantized for i in convs[0].input)  # the first convolution: float in, float weights
    assert all(convs[1].input[j] in dequantized for j in (0, 1))  # the next one: int8 activations and weights


def test_int8_export_without_faces_to_calibrate_on_is_one_clear_error(tiny_checkpoint, tmp_path, monkeypatch):
    from stream_fer.train.export import export_checkpoint

    monkeypatch.setenv("STREAM_FER_FERPLUS", str(tmp_path / "no-ferplus.tar.gz"))
    with pytest.raises(StreamFerError, match="calibrates on FER\\+ training faces"):
        export_checkpoint(tiny_checkpoint, tmp_path / "int8", int8=True, check=False)
    assert not (tmp_path / "int8" / "model.onnx").exists()


def test_export_records_its_check_and_hashes(exported_fp32, exported_fp16, tiny_checkpoint):
    from stream_fer.model_files import file_sha256

    for model_dir, precision in ((exported_fp32, "fp32"), (exported_fp16, "fp16")):
        info = ModelInfo.from_file(model_dir / "model.json")
        assert info.precision == precision
        assert info.input_size == 48 and info.in_channels == 1 and info.map_size == 12
        assert info.class_names[:2] == ("neutral", "happiness") and len(info.class_names) == 7
        assert info.normalisation == {"mean": 0.5, "std": 0.25}
        assert info.source_checkpoint_sha256 == file_sha256(tiny_checkpoint)
        assert info.onnx_sha256 == file_sha256(model_dir / "model.onnx")
        assert info.opset >= 17
        check = info.export_check
        assert check["passed"] and check["precision"] == precision and check["faces"] > 0
        assert set(check["max_abs_diff"]) == set(OUTPUT_NAMES)
    assert ModelInfo.from_file(exported_fp32 / "model.json").export_check["max_abs_diff"]["cams"] <= 1e-4


def test_graph_signature_dynamic_batch_and_boundary_casts(exported_fp32, exported_fp16):
    for model_dir in (exported_fp32, exported_fp16):
        proto = onnx.load(str(model_dir / "model.onnx"))
        assert [i.name for i in proto.graph.input] == [INPUT_NAME]
        assert tuple(o.name for o in proto.graph.output) == OUTPUT_NAMES
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 48, 48]
        for value in list(proto.graph.input) + list(proto.graph.output):  # FP32 at the boundaries
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, value.name
        ops = {n.op_type for n in proto.graph.node}
        assert "Einsum" not in ops  # CAMs as a 1x1 Conv: the portable op for TensorRT and ONNX Runtime
        assert not [n for n in proto.graph.node if n.domain not in ("", "ai.onnx")]
    fp16 = onnx.load(str(exported_fp16 / "model.onnx"))
    weights = [t for t in fp16.graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    casts = [n for n in fp16.graph.node if n.op_type == "Cast"]
    to = sorted(a.i for n in casts for a in n.attribute if a.name == "to")
    assert to.count(onnx.TensorProto.FLOAT16) == 1 and to.count(onnx.TensorProto.FLOAT) == 3


def test_batch_dimension_is_dynamic(exported_fp32, check_faces):
    from stream_fer.engines.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(exported_fp32, threads=1)
    one = engine.infer(check_faces[:1])
    many = engine.infer(check_faces[:7])
    np.testing.assert_allclose(one.probs[0], many.probs[0], atol=1e-6)


def test_failed_check_is_an_error_and_leaves_the_folder_alone(tiny_checkpoint, check_faces, tmp_path,
                                                              monkeypatch):
    from stream_fer.train import export

    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)  # nothing can pass
    out = tmp_path / "out"
    with pytest.raises(StreamFerError, match="export check failed"):
        export.export_checkpoint(tiny_checkpoint, out, faces=check_faces[:4])
    assert not (out / "model.onnx").exists() and not (out / "model.json").exists()
    assert not list(out.glob(".export-*"))


def _wrong_architecture_checkpoint(path):
    """A real checkpoint whose stored config says the default AUNet but whose weights are narrower."""
    from stream_fer.train.checkpoint import save_checkpoint
    from stream_fer.train.model import ModelConfig, build_model

    narrow = build_model(ModelConfig(widths=(32, 64, 64)))
    save_checkpoint(path, narrow)
    state = torch.load(path, weights_only=True)
    state["config"] = ModelConfig().to_dict()
    torch.save(state, path)
    return path


def test_wrong_architecture_checkpoint_is_one_clear_error(tmp_path):
    from stream_fer.engines.torch_engine import TorchEngine
    from stream_fer.train.export import export_checkpoint

    bad = _wrong_architecture_checkpoint(tmp_path / "wrong.pt")
    with pytest.raises(StreamFerError, match="does not match the stream-fer model") as exc:
        export_checkpoint(bad, tmp_path / "out")
    assert "\n" not in str(exc.value)
    with pytest.raises(StreamFerError, match="does not match the stream-fer model"):
        TorchEngine(bad, device="cpu")


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    from stream_fer.train.export import export_checkpoint

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(StreamFerError, match="not a readable stream-fer checkpoint"):
        export_checkpoint(junk, tmp_path / "out")
    with pytest.raises(StreamFerError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "out")


def test_cli_export_wrong_architecture_exits_with_one_line(cli, tmp_path):
    bad = _wrong_architecture_checkpoint(tmp_path / "wrong.pt")
    result = cli("export", "--checkpoint", bad, "--out", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stream-fer: error:") and "does not match" in lines[0]
