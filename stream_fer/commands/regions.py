"""`stream-fer regions IMAGE --out PNG`: draw AU regions on a face, to check the AU table by eye."""

from __future__ import annotations

from stream_fer.face.classes import CLASS_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser("regions", help="draw the AU regions of an expression on a face image")
    parser.add_argument("image", help="an image with a face")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--expression", default="all", choices=("all",) + CLASS_NAMES,
                        help="draw this expression's AUs (default: every AU)")
    parser.add_argument("--landmarker", help="face_landmarker.task to use (default: the fetched one)")
    parser.set_defaults(handler=_regions)


def _regions(args) -> int:
    from stream_fer.draw import draw_au_regions
    from stream_fer.errors import StreamFerError
    from stream_fer.face.action_units import ACTION_UNITS, aus_for
    from stream_fer.images import read_rgb, write_rgb
    from stream_fer.landmarks import Landmarker

    rgb = read_rgb(args.image)
    with Landmarker(args.landmarker, mode="image", max_faces=4) as landmarker:
        faces = landmarker.detect(rgb)
    if not faces:
        raise StreamFerError(f"no face found in {args.image}")
    aus = tuple(ACTION_UNITS.values()) if args.expression == "all" else aus_for(args.expression)
    out = rgb
    for face in faces:
        out = draw_au_regions(out, face.points, aus, label="name" if args.expression != "all" else "code")
    write_rgb(args.out, out)
    print(f"{len(faces)} face(s), {len(aus)} AU(s) drawn -> {args.out}")
    return 0
