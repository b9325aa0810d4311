"""`stream-fer export` and `stream-fer build-engine`."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a training checkpoint to ONNX",
        description="Export a training checkpoint to DIR/model.onnx and DIR/model.json, then check the ONNX "
                    "model against PyTorch on real faces (FP32: max abs diff <= 1e-4; FP16: same argmax on "
                    "every face and attention cosine >= 0.999; INT8: same argmax on >= 97% of the faces and mean "
                    "attention cosine >= 0.998).")
    export.add_argument("--checkpoint", required=True, help="a stream-fer training checkpoint (.pt)")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--fp16", action="store_true",
                        help="FP16 inside the graph, FP32 inputs and outputs (for TensorRT 10 and 11)")
    export.add_argument("--int8", action="store_true",
                        help="INT8 weights and activations (calibrated on FER+ training faces; the first convolution "
                             "and the head stay FP32), for ONNX Runtime on the CPU: about half the CPU per face")
    export.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    export.set_defaults(handler=_export)
    build = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine ahead of time",
        description="Build the TensorRT engine for an exported model (default: the shipped one) into the "
                    "engine cache, so the first run does not wait for it. Uses DIR/fp16 when present.")
    build.add_argument("--model", default=None, help="exported model folder (default: engines/default)")
    build.add_argument("--cache-dir", default=None, help="engine cache folder (default: <cache>/tensorrt)")
    build.add_argument("--force", action="store_true", help="rebuild even if a matching engine is cached")
    build.set_defaults(handler=_build_engine)


def _export(args) -> int:
    from stream_fer.engines.base import ModelInfo
    from stream_fer.errors import StreamFerError

    try:
        from stream_fer.train.export import export_checkpoint
    except ImportError as exc:
        raise StreamFerError(f"export needs the training extras ({exc}); "
                             "pip install 'stream-fer[train]'") from None
    out = export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, int8=args.int8, check=not args.no_check)
    info = ModelInfo.from_file(out / "model.json")
    check = info.export_check
    if check:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in check["max_abs_diff"].items())
        sources = ", ".join(f"{v} {k}" for k, v in check["sources"].items() if v)
        print(f"check ({info.precision}) on {check['faces']} real faces ({sources}): max abs diff {diffs}; "
              f"argmax agreement {check['argmax_agreement']:.4f}; "
              f"attention cosine min {check['min_attention_cosine']:.7f}, "
              f"mean {check.get('mean_attention_cosine', 1.0):.7f}")
    print(f"wrote {out / 'model.onnx'} and {out / 'model.json'} ({info.precision}, opset {info.opset})")
    return 0


def _build_engine(args) -> int:
    from pathlib import Path

    from stream_fer.engines import default_model_dir
    from stream_fer.engines.select import tensorrt_model_dir
    from stream_fer.engines.tensorrt_engine import build_engine

    model_dir = tensorrt_model_dir(Path(args.model) if args.model else default_model_dir())
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    engine = build_engine(model_dir, cache_dir=cache_dir, force=args.force)
    state = "built" if engine.built else "already cached"
    print(f"{state}: {engine.engine_path}", file=sys.stdout)
    print(f"  model {model_dir} ({engine.info.precision}), TensorRT {engine.key.tensorrt_version}, "
          f"{engine.gpu.name} (sm {engine.gpu.sm}), batch profile {engine.profile.label()}")
    return 0
