"""CPU per face of drawing the overlay, whole and by part, on the 4-face mosaic (issue 15).

The mosaic (benchmarks/cpu.py's: the clip at twice its size, four moments of it, four faces) is analysed once
(landmarks, model, tracking: FrameAnalyzer with max_faces 4), then the analysed frames are drawn in timed loops:
`render_frame` with every default overlay, and each per-face part alone (attention heatmap, AU outlines with their
tags, side panel), thread CPU time per face, the frame copy's share taken off the parts. With --against DIR the same
loops run in a subprocess with DIR first on PYTHONPATH (another version's stream_fer package, as cpu.py --against),
the two sides alternating round by round, and the medians are compared.

    python benchmarks/render_cost.py [VIDEO] [--frames 48] [--rounds 7] [--against DIR]

Last line: `render: R ms per face (heatmap H, AU outlines A, panel P)` for this tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
PARTS = ("whole", "heatmap", "au outlines", "panel")


def analysed_frames(video: Path, frames: int):
    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.sources import open_source

    out = []
    with FrameAnalyzer(max_faces=4) as analyzer, open_source(str(video)) as source:
        for frame in source:
            out.append((frame.rgb, analyzer.track(analyzer.classify(analyzer.detect(frame)))))
            if len(out) >= frames:
                break
        names = analyzer.class_names
    return out, names


def one_round(analysed, names) -> dict[str, float]:
    """Thread CPU ms per face of each part, one pass over the analysed frames."""
    from stream_fer import render as R

    faces = sum(len(res.faces) for _, res in analysed)

    def draw(part: str) -> None:
        for rgb, res in analysed:
            if part == "whole":
                R.render_frame(rgb, res, R.OverlayOptions(), 48, names)
                continue
            canvas = rgb.copy()
            for face in res.faces:
                scale = R._Scale.for_face(face.box[3] - face.box[1], canvas.shape[0])
                if part == "heatmap":
                    R._blend_attention(canvas, face, 48, R.OverlayOptions().attention_opacity)
                elif part == "au outlines":
                    R._draw_au_outlines(canvas, face, scale)
                elif part == "panel":
                    layout = R._panel_layout(face, names, scale, True, True)
                    box = R.face_box(face, canvas.shape)
                    x, y = R._place_side(box, layout.width, layout.height, canvas.shape, gap=2 * scale.pad)
                    R._draw_panel(canvas, x, y, layout, face, names, scale, True)
                else:  # the frame copy the parts start from
                    pass

    def timed(part: str) -> float:
        t0 = time.thread_time()
        draw(part)
        return (time.thread_time() - t0) / faces * 1000.0

    copy = timed("copy")
    return {p: timed(p) - (0.0 if p == "whole" else copy) for p in PARTS}


def _worker(args) -> int:
    """--worker: analyse, warm up, then one line of JSON per round on stdout, a round per line of stdin."""
    analysed, names = analysed_frames(args.video, args.frames)
    one_round(analysed, names)  # text rasterised, layers cached: the steady state
    for _ in sys.stdin:
        print(json.dumps(one_round(analysed, names)), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, help="a 4-face video (default: the mosaic of cpu.py's clip)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", type=Path, help="a tree holding another version's stream_fer package")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.video is None:
        sys.path.insert(0, str(_HERE))
        import cpu

        if not cpu.DEFAULT_VIDEO.exists():
            raise SystemExit(f"no video at {cpu.DEFAULT_VIDEO} (set STREAM_FER_SHARED)")
        args.video = cpu.make_mosaic(cpu.DEFAULT_VIDEO, Path(tempfile.mkdtemp(prefix="stream-fer-render-")),
                                     args.frames)
    sides = {"this tree": None, **({str(args.against): args.against} if args.against else {})}
    workers = {}
    for name, tree in sides.items():
        env = dict(os.environ)
        if tree is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        workers[name] = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(args.video), "--frames", str(args.frames), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree or Path.cwd())
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    try:
        for r in range(args.rounds):  # alternating, the order swapped each round
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                w = workers[name]
                w.stdin.write("\n")
                w.stdin.flush()
                line = w.stdout.readline()
                if not line:
                    raise SystemExit(f"the {name} worker stopped (exit {w.wait()})")
                rounds[name].append(json.loads(line))
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    med = {name: {p: statistics.median(r[p] for r in rs) for p in PARTS} for name, rs in rounds.items()}
    print(f"{args.video}: {args.frames} frames, CPU ms per face, median of {args.rounds} rounds")
    for name, m in med.items():
        print(f"  {name:<24} " + "  ".join(f"{p} {m[p]:.3f}" for p in PARTS))
    if args.against:
        a, b = med["this tree"], med[str(args.against)]
        print("  change                   " + "  ".join(f"{p} {100 * (a[p] / b[p] - 1):+.0f}%" for p in PARTS))
    m = med["this tree"]
    print(f"render: {m['whole']:.2f} ms per face (heatmap {m['heatmap']:.2f}, AU outlines {m['au outlines']:.2f}, "
          f"panel {m['panel']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
