"""CPU per frame of whole stream-fer processes against the decode + landmarks floor, in one run.

What counts under load (a batch of videos, a browser beside it, a small computer) is CPU time per frame,
not wall-clock fps: CPU seconds (user + system) hardly change when other processes load the machine,
where fps does. Every figure here is a whole process, start-up included, measured from the outside with
getrusage(RUSAGE_CHILDREN) deltas, so every thread (MediaPipe's, ONNX Runtime's, x264's) counts.

    floor        PyAV decode (FileSource) + MediaPipe landmarks and blendshapes (the product's Landmarker, VIDEO
                 mode, configured as FrameAnalyzer configures it), one loop, one thread of Python: the least
                 any analysis of these frames can cost
    video        stream-fer run VIDEO --out annotated.mp4 (every overlay, H.264, audio copied)
    data only    stream-fer run VIDEO --csv rows.csv
    4 faces      a 2x2 mosaic of the clip (four faces, each quadrant a different moment), analysed with
                 --max-faces 4 and with --max-faces 1: the same pixels decoded and encoded, only the number of
                 faces analysed and drawn differs; growth = (video - floor) with four faces / (video - floor)
                 with one, each floor with the same max_faces
    first frame  wall time of `stream-fer run VIDEO --out x.mp4 --max-frames 1` from spawn to exit: an upper
                 bound on the time to the first annotated frame (it includes closing the file)

Python's bytecode of the stream_fer package (and of the --against tree) is compiled first, as on any machine
where the program has run once: this machine sets PYTHONDONTWRITEBYTECODE, and without the cache every process
compiled about 45 modules again (about 0.1 s of each start-up; --no-bytecode leaves the cache as it is).

The floor and the product runs alternate (floor, video, data only, floor, ...) and each figure is the median
of --repeats runs (default 3). The last line:

    cpu: video Rv x floor, data-only Rd x floor, 4 faces G x, first frame S s

    python benchmarks/cpu.py [VIDEO] [--repeats 3] [--max-frames N] [--mosaic-frames 96] [--no-mirror-too]
                             [--pipelines-too] [--append-results]

--pipelines-too adds the data-only run through the public API (stream_fer.analyze) twice, with the threaded
pipeline and with the sequential one (every stage in one thread, as a batch worker runs a video).

--against DIR adds an A/B of code versions on the same machine at the same time: the floor, video, data-only,
first-frame and mosaic video runs once more with DIR first on PYTHONPATH (a tree holding another version's
stream_fer package, e.g. `git archive COMMIT stream_fer engines | tar -x -C DIR && mv DIR/engines
DIR/stream_fer/engines`), alternating with this tree's, and prints each figure's change.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stream_fer.train.paths import shared_dir

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
COMPARED = ("floor", "video", "data", "first", "video 1f", "video 4f")  # the runs --against repeats with the other tree
DEFAULT_VIDEO = shared_dir() / "videos" / "WolfgangLanger_Pexels.mp4"  # STREAM_FER_SHARED, else ../shared

# The floor, run as its own process (start-up included, as for the product): decode + landmarks in one loop.
FLOOR_CODE = r"""
import json, sys, time
t_start = time.perf_counter()
from stream_fer.landmarks import Landmarker
from stream_fer.sources import FileSource
path, max_faces, max_frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:  # the landmarker as the product configures it (with its small-face search, where it has one)
    from stream_fer.discovery import DEFAULT_MIN_FACE
    options = {"min_face": DEFAULT_MIN_FACE}
except ImportError:
    options = {}
n = faces = 0
with Landmarker(None, mode="video", max_faces=max_faces, **options) as lm, FileSource(path) as source:
    t0 = None
    for frame in source:
        faces += len(lm.detect(frame.rgb, int(round(frame.timestamp * 1000))))
        n += 1
        if t0 is None:
            t0 = time.perf_counter()  # the loop's rate from the second frame on, as the pipeline's fps
            first = t0 - t_start
        if max_frames and n >= max_frames:
            break
    t1 = time.perf_counter()
print(json.dumps({"frames": n, "faces": faces, "fps": (n - 1) / (t1 - t0) if n > 1 else 0.0, "first_s": first}))
import gc
gc.freeze()  # the exit without the interpreter's final collections, as the stream-fer program exits
"""


# The data-only analysis through the public API with a chosen pipeline (stream_fer.analyze's `pipeline`): the
# threaded one the CLI runs, or every stage in one thread, as a batch worker runs a video.
API_CODE = r"""
import json, sys, stream_fer
path, csv, pipeline, max_frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) or None
stats = stream_fer.analyze(path, csv=csv, pipeline=pipeline, max_frames=max_frames, progress=False).stats
print(json.dumps({"frames": stats.frames_out, "fps": stats.fps}))
"""


def _stream_fer() -> list[str]:
    exe = Path(sys.executable).with_name("stream-fer")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "stream_fer.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Run:
    """One whole process: CPU seconds (user + sys of it and its threads), wall seconds, frames, fps."""

    def __init__(self, cpu: float, wall: float, frames: int, fps: float, out: str) -> None:
        self.cpu, self.wall, self.frames, self.fps, self.out = cpu, wall, frames, fps, out

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.frames * 1000.0 if self.frames else float("nan")


def run_process(cmd: list[str], frames_of, pythonpath: Path | None = None) -> Run:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath is not None:  # another version of the code (--against)
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    c0, t0 = _children_cpu(), time.perf_counter()
    # run from the other tree with --against: `python -c` puts its working directory first on sys.path
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=pythonpath or REPO_ROOT)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    frames, fps = frames_of(proc.stdout)
    return Run(cpu, wall, frames, fps, proc.stdout)


def _floor_result(stdout: str) -> tuple[int, float]:
    data = json.loads(stdout.strip().splitlines()[-1])
    return int(data["frames"]), float(data["fps"])


def _product_result(stdout: str) -> tuple[int, float]:
    """The pipeline's summary line: 'N frames, F faces in M frames, S s, X fps'."""
    for line in stdout.splitlines():
        if " fps" in line and " frames" in line:
            words = line.replace(",", " ").split()
            return int(words[0]), float(words[words.index("fps") - 1])
    raise SystemExit(f"no summary line in the output:\n{stdout}")


def floor_cmd(video: Path, max_faces: int, max_frames: int | None) -> list[str]:
    return [sys.executable, "-c", FLOOR_CODE, str(video), str(max_faces), str(max_frames or 0)]


def api_cmd(video: Path, out_dir: Path, pipeline: str, max_frames: int | None) -> list[str]:
    return [sys.executable, "-c", API_CODE, str(video), str(out_dir / f"rows-{pipeline}.csv"), pipeline,
            str(max_frames or 0)]


def product_cmd(video: Path, out_dir: Path, *, csv: bool, max_faces: int, max_frames: int | None,
                extra: tuple[str, ...] = ()) -> list[str]:
    cmd = _stream_fer() + ["run", str(video), "--no-progress", "--max-faces", str(max_faces), *extra]
    cmd += ["--csv", str(out_dir / "rows.csv")] if csv else ["--out", str(out_dir / "annotated.mp4")]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    return cmd


def make_mosaic(video: Path, out_dir: Path, frames: int) -> Path:
    """A 2x2 mosaic of `video` at twice its size (H.264, no audio): four quadrants showing four moments of
    the clip (four faces)."""
    import av
    import numpy as np

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = stream.average_rate
    total = len(decoded) or total
    offsets = [0, total // 4, total // 2, 3 * total // 4]
    h, w = decoded[0].shape[:2]
    path = out_dir / "four_faces.mp4"
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = 2 * w, 2 * h, "yuv420p"
        for i in range(min(frames, total)):
            quads = [decoded[(i + off) % total] for off in offsets]
            four = np.vstack([np.hstack(quads[:2]), np.hstack(quads[2:])])
            for packet in s.encode(av.VideoFrame.from_ndarray(four, format="rgb24")):
                out.mux(packet)
        for packet in s.encode(None):
            out.mux(packet)
    return path


def compile_bytecode(tree: Path) -> None:
    """The package's .pyc files, as Python writes them on a first run where bytecode may be written."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for package in ("stream_fer", "engines", "train"):
        if (tree / package).is_dir():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / package)], env=env, check=True,
                           stdout=subprocess.DEVNULL)


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.cpu_ms)
    return ordered[len(ordered) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-frames", type=int, default=None, help="frames of VIDEO per run (default: all)")
    parser.add_argument("--mosaic-frames", type=int, default=96, help="frames of the 4-face mosaic")
    parser.add_argument("--skip-faces", action="store_true", help="leave out the 1- vs 4-face runs")
    parser.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    parser.add_argument("--label", default="", help="a note for the results section (e.g. 'before')")
    parser.add_argument("--against", type=Path, help="also run floor, video and data only with this tree's "
                                                     "stream_fer first on PYTHONPATH (an A/B of code versions)")
    parser.add_argument("--no-bytecode", action="store_true", help="do not compile the package's bytecode first")
    parser.add_argument("--no-mirror-too", action="store_true",
                        help="also the video and data-only runs with --no-mirror (each face read alone)")
    parser.add_argument("--pipelines-too", action="store_true",
                        help="also data only through stream_fer.analyze, pipeline threaded and sequential")
    args = parser.parse_args(argv)
    if not args.video.exists():
        raise SystemExit(f"no video at {args.video}")
    if not args.no_bytecode:
        for tree in [REPO_ROOT] + ([args.against] if args.against else []):
            compile_bytecode(tree)

    tmp = Path(tempfile.mkdtemp(prefix="stream-fer-cpu-"))
    load = os.getloadavg()[0]
    print(f"video: {args.video}; {os.cpu_count()} cores; load average {load:.1f} at start")
    kinds = {
        "floor": (floor_cmd(args.video, 1, args.max_frames), _floor_result),
        "video": (product_cmd(args.video, tmp, csv=False, max_faces=1, max_frames=args.max_frames), _product_result),
        "data": (product_cmd(args.video, tmp, csv=True, max_faces=1, max_frames=args.max_frames), _product_result),
        "first": (product_cmd(args.video, tmp, csv=False, max_faces=1, max_frames=1), _product_result),
    }
    if args.no_mirror_too:
        for name, csv in (("video nm", False), ("data nm", True)):
            kinds[name] = (product_cmd(args.video, tmp, csv=csv, max_faces=1, max_frames=args.max_frames,
                                       extra=("--no-mirror",)), _product_result)
    if args.pipelines_too:
        for pipeline in ("threaded", "sequential"):
            kinds[f"data {pipeline[:3]}"] = (api_cmd(args.video, tmp, pipeline, args.max_frames), _floor_result)
    if not args.skip_faces:
        four = make_mosaic(args.video, tmp, args.mosaic_frames)
        for name, faces in (("floor 1f", 1), ("video 1f", 1), ("floor 4f", 4), ("video 4f", 4)):
            cmd = (floor_cmd(four, faces, None) if name.startswith("floor")
                   else product_cmd(four, tmp, csv=False, max_faces=faces, max_frames=None))
            kinds[name] = (cmd, _floor_result if name.startswith("floor") else _product_result)
    against = {}
    if args.against:
        if not (args.against / "stream_fer" / "__init__.py").exists():
            raise SystemExit(f"--against: no stream_fer package in {args.against}")
        against = {f"{k} (against)": v for k, v in kinds.items() if k in COMPARED}
    runs: dict[str, list[Run]] = {k: [] for k in {**kinds, **against}}
    for rep in range(args.repeats):
        for name, (cmd, parse) in kinds.items():  # alternating: floor, video, data, first, ... each round
            if name in COMPARED and against:  # the other version right beside, sides swapped
                pair = [(f"{name} (against)", args.against), (name, None)]  # in turn each round
                for run_name, path in (pair if rep % 2 == 0 else pair[::-1]):
                    r = run_process(cmd, parse, path)
                    runs[run_name].append(r)
                    print(f"  round {rep + 1} {run_name:<17} {r.frames:4d} frames  cpu {r.cpu_ms:6.1f} ms/frame  "
                          f"wall {r.wall:6.2f} s  {r.fps:6.1f} fps", flush=True)
                continue
            r = run_process(cmd, parse)
            runs[name].append(r)
            print(f"  round {rep + 1} {name:<9} {r.frames:4d} frames  cpu {r.cpu_ms:6.1f} ms/frame  "
                  f"wall {r.wall:6.2f} s  {r.fps:6.1f} fps", flush=True)
    med = {k: median_run(v) for k, v in runs.items()}
    floor = med["floor"].cpu_ms
    rv, rd = med["video"].cpu_ms / floor, med["data"].cpu_ms / floor
    fps_floor = statistics.median(r.fps for r in runs["floor"])
    fps_video = statistics.median(r.fps for r in runs["video"])
    first = statistics.median(r.wall for r in runs["first"])
    first_cpu = statistics.median(r.cpu for r in runs["first"])
    lines = [
        f"floor (decode + landmarks, 1 thread): {floor:.1f} ms CPU/frame, {fps_floor:.1f} fps",
        f"annotated video: {med['video'].cpu_ms:.1f} ms CPU/frame ({rv:.2f} x floor, target <= 1.35), "
        f"{fps_video:.1f} fps ({fps_video / fps_floor:.2f} of the floor's, target >= 0.9)",
        f"data only (--csv): {med['data'].cpu_ms:.1f} ms CPU/frame ({rd:.2f} x floor, target <= 1.15)",
        f"first frame: {first:.2f} s wall from spawn to exit of a 1-frame run ({first_cpu:.2f} s CPU; "
        f"target <= 1.0 s)",
    ]
    if args.no_mirror_too:
        lines.append(f"--no-mirror (each face read alone, not averaged with its mirror image): annotated video "
                     f"{med['video nm'].cpu_ms:.1f} ms CPU/frame ({med['video nm'].cpu_ms / floor:.2f} x floor), "
                     f"data only {med['data nm'].cpu_ms:.1f} ({med['data nm'].cpu_ms / floor:.2f} x floor)")
    if args.pipelines_too:
        thr, seq = med["data thr"].cpu_ms, med["data seq"].cpu_ms
        lines.append(f"data only through stream_fer.analyze: pipeline threaded {thr:.1f} ms CPU/frame, sequential "
                     f"{seq:.1f} ({100 * (seq / thr - 1):+.1f}%)")
    growth = float("nan")
    if not args.skip_faces:
        beyond1 = med["video 1f"].cpu_ms - med["floor 1f"].cpu_ms
        beyond4 = med["video 4f"].cpu_ms - med["floor 4f"].cpu_ms
        growth = beyond4 / beyond1 if beyond1 > 0 else float("nan")
        lines.append(f"4-face mosaic, {args.mosaic_frames} frames: beyond the landmarks {beyond1:.1f} ms/frame with "
                     f"--max-faces 1, {beyond4:.1f} with --max-faces 4 ({growth:.2f} x, target <= 2); floors "
                     f"{med['floor 1f'].cpu_ms:.1f} and {med['floor 4f'].cpu_ms:.1f} ms/frame")
    summary = (f"cpu: video {rv:.2f} x floor, data-only {rd:.2f} x floor, 4 faces {growth:.2f} x, "
               f"first frame {first:.2f} s")
    if against:
        for name in ("floor", "video", "data"):
            b, a = med[f"{name} (against)"].cpu_ms, med[name].cpu_ms
            lines.append(f"A/B {name}: {b:.1f} ms CPU/frame with {args.against}, {a:.1f} with this tree "
                         f"({100 * (a / b - 1):+.1f}%)")
        if not args.skip_faces:
            b, a = (med[f"video 4f{k}"].cpu_ms - med["floor 4f"].cpu_ms for k in (" (against)", ""))
            b1, a1 = (med[f"video 1f{k}"].cpu_ms - med["floor 1f"].cpu_ms for k in (" (against)", ""))
            lines.append(f"A/B 4 faces: beyond the landmarks {b1:.1f} / {b:.1f} ms/frame (1 / 4 faces, {b / b1:.2f} x) "
                         f"with {args.against}, {a1:.1f} / {a:.1f} ({a / a1:.2f} x) with this tree")
        b, a = (statistics.median(r.wall for r in runs[k]) for k in ("first (against)", "first"))
        lines.append(f"A/B first frame: {b:.2f} s wall with {args.against}, {a:.2f} s with this tree "
                     f"({100 * (a / b - 1):+.1f}%)")
    for line in lines:
        print(line)
    print(summary)

    if args.append_results:
        command = "python benchmarks/cpu.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        label = f" ({args.label})" if args.label else ""
        rows = "\n".join(f"| {k} | {med[k].frames} | {med[k].cpu_ms:.1f} | {statistics.median(r.wall for r in v):.2f} "
                         f"| {statistics.median(r.fps for r in v):.1f} |" for k, v in runs.items())
        section = (f"\n## CPU per frame{label}\n\n`{command}` ({time.strftime('%Y-%m-%d %H:%M')}); {os.cpu_count()} "
                   f"cores, load average {load:.1f} at start (other sessions were using the machine: CPU seconds "
                   f"per frame are the robust figure, wall times and fps are not); medians of {args.repeats} "
                   f"alternating runs, whole processes, start-up included.\n\n"
                   f"| run | frames | CPU ms/frame | wall s | fps |\n|---|---:|---:|---:|---:|\n{rows}\n\n"
                   + "\n".join(f"- {line}" for line in lines) + f"\n\n`{summary}`\n")
        with open(_HERE / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(section)
        print(f"appended to {_HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
