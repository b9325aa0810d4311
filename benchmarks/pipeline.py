"""Pipeline speed, in one run on the same file:

1. decode only               PyAV decode to RGB arrays (FileSource)
2. decode + landmarks        MediaPipe FaceLandmarker (VIDEO mode) on every decoded frame: the floor that
                             MediaPipe sets. Measured twice: sequentially in one thread, and pipelined
                             (decode and landmarks in two threads, as the product runs them); the ratio
                             uses the faster of the two, the stricter baseline.
3. full pipeline             the product's run_pipeline: landmarks, align + classify, track + smooth,
                             render, and the annotated H.264 file written (audio copied)

and prints the fps of each and the ratio full / (decode + landmarks); the target on the 2-core development
machine is >= 0.75. With --rtsp SECONDS it also serves the file over a loopback RTSP stream at 30 fps (the
test server in tests/stream_fer/rtsp_server.py; the product's RtspSource connects to it as a normal TCP
client) and reports the capture-to-rendered latency (median, p95) of the full pipeline and the frames the
live source dropped.

    python benchmarks/pipeline.py VIDEO [--model DIR] [--max-frames N] [--rtsp 20] [--append-results]
    python benchmarks/pipeline.py VIDEO --profile [--max-frames 200] [--csv-only]

Per stage it reports the latency (median, p95) and the CPU time of the stage's own thread per frame
(time.thread_time inside the stage function; native worker threads of MediaPipe or x264 are not in it, the
process total is). --profile instead runs the same stages one after another in one thread under cProfile and
prints the functions with the most own time and the stages' cumulative times (--csv-only: the data-only
path, no render and no video).

--append-results appends a "## Pipeline" section to benchmarks/RESULTS.md (never overwrites it).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stream_fer.frames import FrameResult
from stream_fer.pipeline import Stage, run_pipeline, run_stages
from stream_fer.sinks import DEFAULT_PRESET, VideoSink
from stream_fer.sources import FileSource, RtspSource

log = logging.getLogger("benchmarks.pipeline")


def _cpu() -> float:
    """CPU seconds this process has used (every thread, user + system): a cost that contention does not
    change much, unlike wall-clock fps."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measured:
    def __init__(self, name: str, frames: int, wall: float, cpu: float, faces: int | None = None) -> None:
        self.name, self.frames, self.wall, self.cpu, self.faces = name, frames, wall, cpu, faces

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.frames * 1000 if self.frames else 0.0

    def line(self) -> str:
        faces = f"  ({self.faces} faces)" if self.faces is not None else ""
        return (f"{self.name:<28} {self.frames:5d} frames  {self.fps:7.1f} fps  "
                f"cpu {self.cpu_ms:5.1f} ms/frame{faces}")


def decode_only(path: Path, max_frames: int | None) -> Measured:
    with FileSource(path) as source:
        c0, t0 = _cpu(), time.perf_counter()
        n = 0
        for _ in source:
            n += 1
            if max_frames and n >= max_frames:
                break
        return Measured("decode only", n, time.perf_counter() - t0, _cpu() - c0)


def landmarks_sequential(path: Path, landmarker_path, max_frames: int | None) -> Measured:
    from stream_fer.landmarks import Landmarker

    with Landmarker(landmarker_path, mode="video") as lm:
        with FileSource(path) as warm:
            lm.detect(next(iter(warm)).rgb, 0)  # start-up outside the timing
        with FileSource(path) as source:
            c0, t0 = _cpu(), time.perf_counter()
            n = faces = 0
            for frame in source:
                faces += len(lm.detect(frame.rgb, int(round(frame.timestamp * 1000)) + 1))
                n += 1
                if max_frames and n >= max_frames:
                    break
            return Measured("decode + landmarks, 1 thread", n, time.perf_counter() - t0, _cpu() - c0, faces)


def landmarks_pipelined(path: Path, landmarker_path, max_frames: int | None) -> Measured:
    from stream_fer.landmarks import Landmarker

    with Landmarker(landmarker_path, mode="video") as lm:
        with FileSource(path) as warm:
            lm.detect(next(iter(warm)).rgb, 0)
        source = FileSource(path)
        source.open()
        stage = Stage("landmarks", lambda frame, _: FrameResult(
            frame.index, frame.timestamp, tuple(lm.detect(frame.rgb, int(round(frame.timestamp * 1000)) + 1))))
        c0, t0 = _cpu(), time.perf_counter()
        stats = run_stages(source, [stage], [], max_frames=max_frames)
        return Measured("decode + landmarks, 2 thr.", stats.frames_out, time.perf_counter() - t0, _cpu() - c0,
                        stats.faces)


def _analyzer(args, engine):
    from stream_fer.analyzer import FrameAnalyzer

    analyzer = FrameAnalyzer(engine, landmarker_path=args.landmarker, max_faces=args.max_faces)
    return analyzer


def _warm(analyzer, path: Path) -> None:
    """One frame through every stage (MediaPipe and ONNX Runtime start-up). No reset() afterwards: in VIDEO
    mode it would start a new MediaPipe graph, and its start-up would fall inside the timing."""
    with FileSource(path) as source:
        analyzer.analyze(next(iter(source)))


def full_pipeline(path: Path, args, engine, out: Path):
    analyzer = _analyzer(args, engine)
    try:
        _warm(analyzer, path)
        source = FileSource(path)
        info = source.open()
        sink = VideoSink(out, info, preset=args.preset, crf=args.crf)
        c0, t0 = _cpu(), time.perf_counter()
        stats = run_pipeline(source, analyzer, [sink], progress=False, max_frames=args.max_frames)
        return stats, Measured("full pipeline + H.264 file", stats.frames_out, time.perf_counter() - t0,
                               _cpu() - c0, stats.faces)
    finally:
        analyzer.close()


def rtsp_latency(path: Path, args, engine, out: Path):
    sys.path.insert(0, str(REPO_ROOT / "tests" / "stream_fer"))
    from rtsp_server import RtspServer

    server = RtspServer.from_video(path, fps=30.0, max_frames=args.max_frames or 300, loop=True)
    analyzer = _analyzer(args, engine)
    try:
        _warm(analyzer, path)
        with server:
            source = RtspSource(server.url)
            info = source.open()
            sink = VideoSink(out, info, preset=args.preset, crf=args.crf)
            frames = int(args.rtsp * 30)
            stats = run_pipeline(source, analyzer, [sink], progress=False, max_frames=frames)
        return stats, server
    finally:
        analyzer.close()


def profile(args, engine, out_dir: Path) -> int:
    """The stages one after another in this thread under cProfile (threads would each need a profiler):
    the same work per frame as the pipeline, attributed to functions."""
    import cProfile
    import pstats

    from stream_fer.records import ROW_FIELDS, to_row
    from stream_fer.sinks import CsvSink

    analyzer = _analyzer(args, engine)
    try:
        _warm(analyzer, args.video)
        source = FileSource(args.video)
        info = source.open()
        sink = (CsvSink(out_dir / "rows.csv", ROW_FIELDS, to_row) if args.csv_only
                else VideoSink(out_dir / "annotated.mp4", info, preset=args.preset, crf=args.crf))
        prof = cProfile.Profile(time.thread_time)  # CPU of this thread, not wall time: robust under load
        n = 0
        c0, t0 = _cpu(), time.perf_counter()
        prof.enable()
        try:
            for frame in source:
                result = analyzer.track(analyzer.classify(analyzer.detect(frame)))
                annotated = None if args.csv_only else analyzer.render(frame, result)
                sink.write(frame, result, annotated)
                n += 1
                if args.max_frames and n >= args.max_frames:
                    break
        finally:
            prof.disable()
            sink.close()
            source.close()
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
    finally:
        analyzer.close()
    print(f"profiled {n} frames ({'data only' if args.csv_only else 'annotated video'}), one thread: "
          f"{cpu / n * 1000:.1f} ms CPU/frame, {n / wall:.1f} fps (profiling overhead included)")
    stats = pstats.Stats(prof)
    per_frame = {}
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if file.endswith(("analyzer.py", "sinks.py")) and name in ("detect", "classify", "track", "render", "write"):
            per_frame[f"{Path(file).stem}.{name}"] = per_frame.get(f"{Path(file).stem}.{name}", 0.0) + ct
    print("stages (cumulative thread-CPU ms per frame): "
          + ", ".join(f"{k} {v / n * 1000:.2f}" for k, v in per_frame.items()))
    print(f"top {args.top} functions by {'own' if args.sort == 'tottime' else 'cumulative'} thread-CPU time:")
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        busy = subprocess.run(["pgrep", "-f", "train fit"], capture_output=True, text=True, check=False).stdout.split()
    except OSError:
        busy = []
    note = f", {len(busy)} training job(s) running" if busy else ", no training jobs running"
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at start{note}, Python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--model", help="exported model folder (default: engines/default)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1, as the CLI)")
    parser.add_argument("--landmarker", help="face_landmarker.task")
    parser.add_argument("--max-faces", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--crf", type=int, default=23)
    parser.add_argument("--rtsp", type=float, default=0.0, metavar="SECONDS",
                        help="also measure latency over a loopback RTSP stream at 30 fps for this long")
    parser.add_argument("--out", type=Path, help="folder for the annotated files (default: a temporary one)")
    parser.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    parser.add_argument("--label", default="", help="a note for the results section (e.g. 'provisional')")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the stages run one after another in one thread; print the top functions")
    parser.add_argument("--csv-only", action="store_true", help="with --profile: the data-only path (CSV rows)")
    parser.add_argument("--top", type=int, default=25, help="with --profile: how many functions to list")
    parser.add_argument("--sort", choices=("tottime", "cumulative"), default="tottime",
                        help="with --profile: order by a function's own time or with its callees'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from stream_fer.engines.select import load_engine

    from stream_fer.model_files import resolve_landmarker

    args.landmarker = str(resolve_landmarker(args.landmarker))
    engine = load_engine(args.model, backend=args.backend, threads=args.threads)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="stream-fer-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        return profile(args, engine, out_dir)
    where = machine()
    print(f"machine: {where}")
    print(f"engine: {engine.name} ({getattr(engine, 'model_dir', None) or 'default checkpoint'}); video: {args.video}")

    dec = decode_only(args.video, args.max_frames)
    print(dec.line())
    seq = landmarks_sequential(args.video, args.landmarker, args.max_frames)
    print(seq.line())
    pip = landmarks_pipelined(args.video, args.landmarker, args.max_frames)
    print(pip.line())
    floor = max(seq.fps, pip.fps)
    stats, full = full_pipeline(args.video, args, engine, out_dir / "annotated.mp4")
    print(full.line())
    ratio = full.fps / floor
    ratio_seq = full.fps / seq.fps
    read = stats.extra.get("read")
    print(f"ratio full / (decode + landmarks) = {ratio:.2f} against the faster floor, {ratio_seq:.2f} against the "
          f"one-thread floor (target >= 0.75)")
    for line in stats.summary_lines()[1:]:
        print("   ", line)
    if read is not None:
        print(f"     read (decode)  median {read.median_ms:6.1f} ms  cpu {read.cpu_ms:5.1f} ms")

    rtsp_lines: list[str] = []
    if args.rtsp > 0:
        live, _ = rtsp_latency(args.video, args, engine, out_dir / "live.mp4")
        rtsp_lines = [
            f"loopback RTSP at 30 fps, {live.frames_out} frames processed ({args.rtsp:g} s requested): "
            f"capture -> rendered latency median {live.latency_median_ms:.0f} ms, p95 {live.latency_p95_ms:.0f} ms; "
            f"throughput {live.fps:.1f} fps; dropped {live.dropped}",
        ]
        print(rtsp_lines[0])
        for line in live.summary_lines():
            if line.startswith("  "):  # the per-stage lines
                print("   ", line)

    if args.append_results:
        command = "python benchmarks/pipeline.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        stage_rows = "\n".join(
            f"| {s.name} | {s.median_ms:.1f} | {s.p95_ms:.1f} | {s.cpu_ms:.1f} | {s.capacity_fps:.0f} |"
            for s in ((read,) if read else ()) + stats.stages)
        label = f" ({args.label})" if args.label else ""
        section = f"""
## Pipeline{label}

`{command}` ({time.strftime('%Y-%m-%d %H:%M')}); machine: {where}; engine {engine.name}; x264 preset
{args.preset}, crf {args.crf}; {args.max_faces} face(s) max.

| run | frames | fps | CPU ms/frame |
|---|---:|---:|---:|
""" + "\n".join(f"| {m.name} | {m.frames} | {m.fps:.1f} | {m.cpu_ms:.1f} |" for m in (dec, seq, pip, full)) + f"""

Ratio full / (decode + landmarks) = **{ratio:.2f}** against the faster (two-thread) floor, {ratio_seq:.2f}
against the one-thread floor (target >= 0.75). CPU ms/frame: process CPU time (all threads) per frame.
End-to-end latency of the file run (capture -> rendered; files queue by design): median
{stats.latency_median_ms:.0f} ms, p95 {stats.latency_p95_ms:.0f} ms.

| stage (file run) | median ms | p95 ms | thread CPU ms/frame | fps alone |
|---|---:|---:|---:|---:|
{stage_rows}
"""
        if rtsp_lines:
            section += "\n" + rtsp_lines[0] + ".\n"
        results = _HERE / "RESULTS.md"
        with open(results, "a", encoding="utf-8") as f:
            if not results.exists() or results.stat().st_size == 0:
                f.write("# Benchmark results\n")
            f.write(section)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "MainThread"
    sys.exit(main())
