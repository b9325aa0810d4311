"""`stream-fer run INPUT --out OUT.mp4`: annotate a video file, RTSP stream or webcam."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="annotate a video file, rtsp:// stream or webcam index")
    parser.add_argument("input")
    parser.add_argument("--out")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from stream_fer.errors import StreamFerError

    raise StreamFerError("the video pipeline is not built yet")
