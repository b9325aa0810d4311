"""`python -m train package`: a trained checkpoint -> the weights-only checkpoint a release ships, with its
inference settings (e.g. --test-time-flip) written into the model config that every consumer reads
(evaluation, ONNX export, the PyTorch engine), so they all run the same model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stream_fer.model_files import file_sha256
from stream_fer.train.checkpoint import load_model, save_checkpoint
from stream_fer.train.model import ModelConfig

KEPT = ("epoch", "metrics", "fit_config")  # optimiser, RNG and history stay in the run folder


def package_checkpoint(source: Path, out: Path, test_time_flip: bool | None = None) -> ModelConfig:
    """Write `out` from `source` (weights checked against the architecture by load_model) with the given
    inference settings; returns the written model config, read back from `out`."""
    model, state = load_model(source)
    if test_time_flip is not None:
        model.config = dataclasses.replace(model.config, test_time_flip=test_time_flip)
    extra = {k: state[k] for k in KEPT if k in state}
    save_checkpoint(out, model, source=json.dumps({"name": Path(source).name, "sha256": file_sha256(source)}),
                    **extra)
    return load_model(out)[0].config


def register(sub) -> None:
    parser = sub.add_parser("package", help="write the weights-only checkpoint to ship, with inference settings")
    parser.add_argument("--checkpoint", required=True, type=Path, help="a run's best.pt")
    parser.add_argument("--out", required=True, type=Path)
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--test-time-flip", dest="flip", action="store_true", default=None,
                      help="average each face with its mirror image at inference (twice the cost)")
    flip.add_argument("--no-test-time-flip", dest="flip", action="store_false")
    parser.set_defaults(handler=_package)


def _package(args) -> int:
    config = package_checkpoint(args.checkpoint, args.out, args.flip)
    print(f"wrote {args.out} (test_time_flip={config.test_time_flip}, sha256 {file_sha256(args.out)[:12]})")
    return 0
