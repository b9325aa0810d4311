"""`stream-fer batch` throughput: one worker, the default pool (one worker per core) and Ray tasks, on the
same batch of 8 or more videos made from the shared clips (copies, so every run reads the same bytes): by
default the five clips (the four shared ones and the shipped sample) in turn, whole: 16 videos, 2784 frames,
about half a minute on the pool of a 2-core machine, so that the batch's fixed costs (starting the workers:
about 2 s; writing the combined dataset at the end) are not most of what is measured. Workers run one video
per core (the sequential pipeline, one thread per library), so a worker's CPU per wall second is about 1 on
an idle machine.

For each configuration, through the real CLI in a subprocess (a fresh output folder each time):

    videos/min, fps          videos and frames over the wall time of the whole command (start-up included)
    frames per CPU-second    frames over the CPU time (user + sys) the workers spent inside their videos
                             (batch.csv's cpu_seconds: engine load and imports excluded)
    worker CPU / wall        the workers' CPU seconds over their wall seconds inside the videos: about 1.0
                             when a worker keeps to one core (below 1 when other load takes its core)
    start-up, tail           seconds from the command's start to the first video's start, and from the last
                             video's end to the command's end (writing batch.csv and the combined dataset)

and these ratios:

    scaling        pool fps / (cores x one worker's frames per CPU-second): how close the pool comes to
                   keeping every core busy at one worker's efficiency (target >= 0.9)
    ray overhead   Ray's wall time against the pool's, minus 1 (target <= 10%). Ray runs on a local Ray this
                   script starts beforehand (like joining a running cluster); its start-up is reported apart.
    per CPU-second the pool's and Ray's frames per CPU-second against one worker's: below 1 when workers
                   side by side slow each other down (threads oversubscribing the cores, shared caches);
                   unlike the two above, other load on the machine hardly moves it.

Configurations alternate over --repeats rounds; medians are reported. CPU seconds are the robust figure on a
shared machine: fps and the ratios move with what else is running.

    python benchmarks/batch.py [--videos 16] [--max-frames 0] [--repeats 3] [--no-ray] [--append-results]

(--max-frames 0: whole clips.) The default invocation, `python benchmarks/batch.py`, is the one reported.

Last line: `batch: pool X fps, ray Y fps, scaling Z, ray overhead W%`.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stream_fer.train.paths import shared_dir

from stream_fer.batch.pool import default_workers
from stream_fer.samples import SAMPLE_VIDEO

CLIPS = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "WolfgangLanger_Pexels.mp4")  # with the sample


def make_batch(folder: Path, count: int) -> list[Path]:
    shared = shared_dir() / "videos"
    sources = [shared / name for name in CLIPS if (shared / name).is_file()] + [SAMPLE_VIDEO]
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        dst = folder / f"v{i:02d}_{src.name}"
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


def run(name: str, inputs: Path, out: Path, extra: list[str], max_frames: int | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "stream_fer.cli", "batch", str(inputs), "--out-dir", str(out), "--no-progress",
           *extra] + (["--max-frames", str(max_frames)] if max_frames else [])
    t0, epoch0 = time.perf_counter(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, epoch1 = time.perf_counter() - t0, time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    with open(out / "batch.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    frames = sum(int(r["frames"]) for r in rows)
    cpu = sum(float(r["cpu_seconds"]) for r in rows)
    busy = sum(float(r["seconds"]) for r in rows)
    first, last = min(_epoch(r["started"]) for r in rows), max(_epoch(r["finished"]) for r in rows)
    return {"name": name, "videos": len(rows), "frames": frames, "wall_s": wall, "cpu_s": cpu,
            "fps": frames / wall, "videos_per_min": 60 * len(rows) / wall, "frames_per_cpu_s": frames / cpu,
            "span_fps": frames / (last - first), "cpu_per_wall": cpu / busy, "startup_s": first - epoch0,
            "tail_s": epoch1 - last}


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16, help="at least 8")
    parser.add_argument("--max-frames", type=int, default=0, help="per video (0, the default: whole clips)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    cores = default_workers()
    max_frames = args.max_frames or None
    work = Path(tempfile.mkdtemp(prefix="stream-fer-batch-bench-"))
    ray_start_s = None
    load_start = os.getloadavg()
    try:
        inputs = work / "in"
        inputs.mkdir()
        make_batch(inputs, args.videos)
        configs = [("one worker", ["--workers", "1"]), ("pool", [])]
        if not args.no_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="warning")
            ray_start_s = time.perf_counter() - t0
            configs.append(("ray", [f"--ray={ray.get_runtime_context().gcs_address}"]))
        results: dict[str, list[dict]] = {name: [] for name, _ in configs}
        for round_ in range(args.repeats):
            order = configs if round_ % 2 == 0 else configs[::-1]  # alternate, so drift hits both sides
            for name, extra in order:
                r = run(name, inputs, work / "out", extra, max_frames)
                results[name].append(r)
                print(f"round {round_ + 1} {name:10s}: {r['videos']} videos, {r['frames']} frames in "
                      f"{r['wall_s']:.1f} s: {r['fps']:.1f} fps, {r['videos_per_min']:.1f} videos/min, "
                      f"{r['frames_per_cpu_s']:.1f} frames per CPU-s; {r['span_fps']:.1f} fps from the first "
                      f"video's start to the last one's end; worker CPU / wall {r['cpu_per_wall']:.2f}; start-up "
                      f"{r['startup_s']:.1f} s, tail {r['tail_s']:.1f} s; load average {os.getloadavg()[0]:.1f}",
                      flush=True)
        if not args.no_ray:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "fps", "videos_per_min",
                                                                    "frames_per_cpu_s", "span_fps",
                                                                    "cpu_per_wall", "startup_s", "tail_s")}
           for name, rs in results.items()}
    one, pool = med["one worker"], med["pool"]
    ideal = cores * one["frames_per_cpu_s"]
    scaling = pool["fps"] / ideal
    lines = [f"{args.videos} videos x {max_frames or 'all'} frames, {cores} cores, medians of {args.repeats} "
             f"alternating rounds" + (f"; local Ray started in {ray_start_s:.1f} s (not in its times)"
                                       if ray_start_s is not None else "")
             + f"; load average (1 min) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end",
             "| run | wall s | videos/min | fps | fps, first start to last end | frames per CPU-s | worker CPU / wall "
             "| start-up s | tail s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in med.items():
        lines.append(f"| {name} | {m['wall_s']:.1f} | {m['videos_per_min']:.1f} | {m['fps']:.1f} | "
                     f"{m['span_fps']:.1f} | {m['frames_per_cpu_s']:.1f} | {m['cpu_per_wall']:.2f} | "
                     f"{m['startup_s']:.1f} | {m['tail_s']:.1f} |")
    lines.append(f"scaling: pool {pool['fps']:.1f} fps / ({cores} cores x {one['frames_per_cpu_s']:.1f} frames "
                 f"per CPU-s = {ideal:.1f}) = {scaling:.2f} (target >= 0.9); without start-up (first start to "
                 f"last end) {pool['span_fps'] / ideal:.2f}; pool / one worker {pool['fps'] / one['fps']:.2f} x")
    lines.append("per CPU-second (robust to other load): pool / one worker "
                 + f"{pool['frames_per_cpu_s'] / one['frames_per_cpu_s']:.2f}"
                 + (f", ray / one worker {med['ray']['frames_per_cpu_s'] / one['frames_per_cpu_s']:.2f}"
                    if "ray" in med else "") + " (1.0: running side by side costs a worker nothing)")
    if "ray" in med:
        overhead = 100.0 * (med["ray"]["wall_s"] / pool["wall_s"] - 1.0)
        lines.append(f"ray overhead: {med['ray']['wall_s']:.1f} s against the pool's {pool['wall_s']:.1f} s = "
                     f"{overhead:+.1f}% (target <= 10%)")
        last = (f"batch: pool {pool['fps']:.1f} fps, ray {med['ray']['fps']:.1f} fps, scaling {scaling:.2f}, "
                f"ray overhead {overhead:.0f}%")
    else:
        last = f"batch: pool {pool['fps']:.1f} fps, ray - fps, scaling {scaling:.2f}, ray overhead -%"
    print("\n".join(lines))
    if args.append_results:
        with open(_HERE / "RESULTS.md", "a") as f:
            f.write("\n## Batch (issue 13)\n\n`python benchmarks/batch.py " + " ".join(sys.argv[1:]) + "`, "
                    + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + "\n\n" + "\n".join(lines) + "\n\n`"
                    + last + "`\n")
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
