"""`stream-fer serve`: the Gradio app."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="start the browser app (binds 127.0.0.1 by default)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.set_defaults(handler=_serve)


def _serve(args) -> int:
    from stream_fer.errors import StreamFerError

    raise StreamFerError("the app is not built yet")
