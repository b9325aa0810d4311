"""`stream-fer export` and `stream-fer build-engine`."""

from __future__ import annotations


def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="export a training checkpoint to ONNX")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--fp16", action="store_true")
    export.set_defaults(handler=_not_yet)
    build = subparsers.add_parser("build-engine", help="build a TensorRT engine ahead of time")
    build.add_argument("--model", default=None)
    build.set_defaults(handler=_not_yet)


def _not_yet(args) -> int:
    from stream_fer.errors import StreamFerError

    raise StreamFerError("engines are not built yet")
