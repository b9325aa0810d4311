"""`stream-fer serve`: the browser app (Gradio). Binds 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from stream_fer.app.settings import (
        BACKENDS,
        DEFAULT_HOST,
        DEFAULT_MAX_SESSIONS,
        DEFAULT_MAX_UPLOAD_MB,
        DEFAULT_PORT,
        DEFAULT_SESSION_IDLE_S,
    )

    parser = subparsers.add_parser(
        "serve", help="start the browser app (binds 127.0.0.1 by default)",
        description="Start the browser app: webcam, RTSP, video files and photos, with explanations. "
                    "Needs the app extra (pip install 'stream-fer[app]').")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; "
                             "0.0.0.0 opens the app to your network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend selected when the page opens (default: auto)")
    parser.add_argument("--model", metavar="DIR", type=Path, default=None,
                        help="exported model folder (default: the shipped model)")
    parser.add_argument("--landmarker", metavar="PATH", type=Path, default=None,
                        help="face_landmarker.task (default: resolved and verified)")
    parser.add_argument("--min-face", type=float, default=40, metavar="PX",
                        help="smallest face height every analysis looks for, in pixels (default: 40; 0: the "
                             "whole-frame detector only)")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="N",
                        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, metavar="N",
                        help=f"visitors that may hold a live stream (webcam, RTSP) at once; the next one is "
                             f"told the app is busy (default {DEFAULT_MAX_SESSIONS})")
    parser.add_argument("--session-idle", type=float, default=DEFAULT_SESSION_IDLE_S, metavar="S",
                        help="release a visitor's live session after this many seconds without a frame or "
                             f"poll; a closed page releases it at once (default {DEFAULT_SESSION_IDLE_S:g})")
    parser.set_defaults(handler=_serve)


def _serve(args) -> int:
    from stream_fer.errors import StreamFerError

    if not 0 < args.port < 65536:
        raise StreamFerError(f"--port must be between 1 and 65535, not {args.port}")
    if args.max_upload_mb < 1:
        raise StreamFerError(f"--max-upload-mb must be at least 1, not {args.max_upload_mb}")
    if not args.min_face >= 0:
        raise StreamFerError("--min-face must be a face height in pixels >= 0 (0: no small-face search)")
    if args.max_sessions < 1:
        raise StreamFerError(f"--max-sessions must be at least 1, not {args.max_sessions}")
    if not args.session_idle > 0:
        raise StreamFerError(f"--session-idle must be more than 0 seconds, not {args.session_idle:g}")
    from stream_fer.app.ports import check_port_free

    check_port_free(args.host, args.port)  # before gradio and the model load: a taken port fails at once
    try:
        from stream_fer.app.app import serve
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("gradio", "gradio_client"):
            raise StreamFerError("the app needs gradio: pip install 'stream-fer[app]'") from None
        raise
    serve(host=args.host, port=args.port, backend=args.backend, max_upload_mb=args.max_upload_mb,
          model_dir=args.model, landmarker_path=args.landmarker, block=True, max_sessions=args.max_sessions,
          session_idle_s=args.session_idle, min_face=args.min_face)
    return 0
