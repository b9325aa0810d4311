"""Regenerate docs/annotated_frame.png (the README's picture of the overlay): two stills from the shared
test videos side by side, analysed with the shipped default model.

    python docs/make_annotated_frame.py [--out docs/annotated_frame.png] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_fer.train.paths import shared_dir  # noqa: E402  (after the sys.path line)

SHARED = shared_dir()
STILLS = ("WolfgangLanger_Pexels_f0300.png", "single_face_f0036.png")


def main(argv: list[str] | None = None) -> int:
    from stream_fer.engines.select import load_engine
    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.frames import Frame
    from stream_fer.images import read_rgb, write_rgb

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "annotated_frame.png")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--landmarker", type=Path, default=None)
    args = p.parse_args(argv)
    landmarker = args.landmarker
    if landmarker is None and (SHARED / "models" / "face_landmarker.task").is_file():
        landmarker = SHARED / "models" / "face_landmarker.task"
    rgb = np.concatenate([read_rgb(SHARED / "videos" / "stills" / name) for name in STILLS], axis=1)
    # FP32, as tests/stream_fer/test_render.py renders it again (the INT8 default differs by a few levels)
    with FrameAnalyzer(load_engine(args.model, backend="onnxruntime"), landmarker_path=landmarker, max_faces=2,
                       mode="image", smoothing="none") as analyzer:
        annotated, result = analyzer.analyze(Frame(0, 0.0, time.monotonic(), rgb))
    write_rgb(args.out, annotated)
    for face in result.faces:
        print(f"#{face.track_id} {face.label} {face.confidence:.2f} cos {face.att_au_cosine}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
