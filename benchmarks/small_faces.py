"""Faces at a distance (issue 20): recall, agreement and cost of the small-face search.

1. Builds a 1080p test video from the shared clips: the Caminandes title (no_face.mp4, upscaled) as the
   background, one large face (WolfgangLanger_Pexels.mp4 scaled up, face ~370 px) and small faces 40-130 px
   tall (that clip and single_face.mp4, scaled down, at different time offsets), written as H.264.
2. Classifies every source frame at full size (the reference; VIDEO mode, no smoothing).
3. Runs the composed video with the small-face search (--min-face, default the product's) and without it
   (min_face=0, the whole-frame pass only): per face size the share of frames it was landmarked in (of the
   frames where the full-size reference found it), the agreement of its raw label with the full-size label
   (and, for comparison, of the label the same small face gets when aligned with its full-size landmarks
   scaled into place: what the classifier can do at that size with perfect landmarks), its track ids, and
   fps and CPU ms per frame (decode + FrameAnalyzer.analyze: landmarks, classify, track, render; one thread
   of Python).
4. Runs today's large-face clip (WolfgangLanger_Pexels.mp4, 640x360) with and without the search, the two
   sides interleaved frame by frame, median of --repeats, at max_faces 1 (the default) and 2, and checks the
   results are the same; and the same for the clips without a face (no_face.mp4) and losing it
   (face_noface.mov) at max_faces 1.

Last line: `small faces: recall R at >=48 px, agreement A, fps F (large-face clip change C%)`, where R and A
pool the small faces >= 48 px (not the large one), F is the composed video's fps with the search, and C the
large-face clip's CPU per frame change at the default settings.

    python benchmarks/small_faces.py [--frames 150] [--min-face 40] [--repeats 3] [--large-frames 472]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/engines.py shadows `engines`
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from stream_fer.train.paths import shared_dir  # noqa: E402

from stream_fer.analyzer import FrameAnalyzer  # noqa: E402
from stream_fer.discovery import DEFAULT_MIN_FACE  # noqa: E402
from stream_fer.sources import FileSource  # noqa: E402

log = logging.getLogger("benchmarks.small_faces")

WIDTH, HEIGHT = 1920, 1080
LARGE_SCALE = 1.35
# (face height px, source clip, frame offset, top-left corner): small faces on the right of the large one
SMALL = (
    (40, "single_face.mp4", 0, (960, 40)),
    (48, "WolfgangLanger_Pexels.mp4", 100, (1200, 40)),
    (56, "single_face.mp4", 20, (1480, 40)),
    (64, "WolfgangLanger_Pexels.mp4", 200, (960, 330)),
    (85, "single_face.mp4", 40, (1320, 330)),
    (110, "WolfgangLanger_Pexels.mp4", 300, (960, 650)),
    (130, "single_face.mp4", 10, (1400, 650)),
)


def _cpu() -> float:
    """CPU seconds of the whole process (every thread, user + system)."""
    return time.process_time()


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@dataclass
class Slot:
    name: str
    nominal: int  # face height px
    source: str
    offset: int
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1 in the composed frame
    scale: float

    def source_index(self, t: int, length: int) -> int:
        """Ping-pong through the source so a short clip never jumps back to its start."""
        i = (self.offset + t) % (2 * length - 2)
        return i if i < length else 2 * length - 2 - i


def reference(analyzer: FrameAnalyzer, frames: list[np.ndarray]):
    """Full-size raw label and landmarks per source frame (None: no face), and the median face height."""
    from stream_fer.frames import Frame

    analyzer.reset()
    labels, points, heights = [], [], []
    for i, rgb in enumerate(frames):
        result = analyzer.track(analyzer.classify(analyzer.detect(Frame(i, i / 30.0, 0.0, rgb))))
        if result.faces:
            face = max(result.faces, key=lambda f: f.box[3] - f.box[1])
            labels.append(analyzer.class_names[int(np.argmax(face.raw_probs))])
            points.append(face.landmarks)
            heights.append(face.box[3] - face.box[1])
        else:
            labels.append(None)
            points.append(None)
    return labels, points, float(np.median(heights))


def perfect_labels(engine, path: Path, slots: list[Slot], clips, ref_points, class_names) -> dict[str, list]:
    """Per slot and frame, the label of the face in the composed video aligned with its full-size landmarks
    scaled into place (perfect landmarks): what the classifier makes of a face this small at best."""
    from stream_fer.align import align_faces

    out = {slot.name: [] for slot in slots}
    for t, rgb in enumerate(decode(path)):
        placed = []
        for slot in slots:
            src = clips[slot.source]
            pts = ref_points[slot.source][slot.source_index(t, len(src))]
            if pts is None:
                out[slot.name].append(None)
                continue
            x0, y0, x1, y1 = slot.rect
            sx, sy = (x1 - x0) / src[0].shape[1], (y1 - y0) / src[0].shape[0]
            placed.append((slot.name, pts * np.float32((sx, sy, sx)) + np.float32((x0, y0, 0))))
        if placed:
            crops, _ = align_faces(rgb, [p for _, p in placed], engine.info.input_size)
            probs = engine.infer(crops).probs
            for (name, _), p in zip(placed, probs):
                out[name].append(class_names[int(np.argmax(p))])
    return out


def compose(out: Path, n_frames: int, clips: dict[str, list[np.ndarray]], face_height: dict[str, float],
            background: list[np.ndarray]) -> list[Slot]:
    big = clips["WolfgangLanger_Pexels.mp4"][0]
    bw, bh = int(big.shape[1] * LARGE_SCALE), int(big.shape[0] * LARGE_SCALE)
    large = Slot("large", int(face_height["WolfgangLanger_Pexels.mp4"] * LARGE_SCALE), "WolfgangLanger_Pexels.mp4",
                 0, (20, (HEIGHT - bh) // 2, 20 + bw, (HEIGHT - bh) // 2 + bh), LARGE_SCALE)
    slots = [large]
    for nominal, source, offset, (x, y) in SMALL:
        scale = nominal / face_height[source]
        h, w = clips[source][0].shape[:2]
        slots.append(Slot(f"{nominal}px", nominal, source, offset, (x, y, x + round(w * scale), y + round(h * scale)),
                          scale))
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for t in range(n_frames):
            bg = background[t % len(background)]
            canvas = (cv2.resize(bg, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR) * 0.6).astype(np.uint8)
            for slot in slots:
                frames = clips[slot.source]
                src = frames[slot.source_index(t, len(frames))]
                x0, y0, x1, y1 = slot.rect
                canvas[y0:y1, x0:x1] = cv2.resize(src, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return slots


def run_video(analyzer: FrameAnalyzer, path: Path, max_frames: int | None = None):
    """(per-frame results, fps, CPU ms per frame): decode + the whole per-frame analysis, one thread. Each
    result keeps its stage latencies (see stage_ms)."""
    analyzer.reset()
    results = []
    wall0, cpu0 = time.perf_counter(), _cpu()
    with FileSource(path) as source:
        for frame in source:
            if max_frames is not None and frame.index >= max_frames:
                break
            _, result = analyzer.analyze(frame)
            results.append(result)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    return results, len(results) / wall, cpu / len(results) * 1000.0


def run_interleaved(without: FrameAnalyzer, with_search: FrameAnalyzer, frames: list[np.ndarray]) -> dict:
    """Both analyzers on the same frames, frame by frame in turn: CPU and wall ms per frame of each side,
    whether their results are the same, and the search's counters."""
    from stream_fer.frames import Frame

    sides = (without, with_search)
    for a in sides:
        a.reset()
    cpu, wall, outputs = [0.0, 0.0], [0.0, 0.0], ([], [])
    for i, rgb in enumerate(frames):
        frame = Frame(i, i / 23.976, 0.0, rgb)
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            c0, w0 = _cpu(), time.perf_counter()
            _, result = sides[k].analyze(frame)
            cpu[k] += _cpu() - c0
            wall[k] += time.perf_counter() - w0
            outputs[k].append([(f.track_id, f.label, f.box, f.probs.tobytes()) for f in result.faces])
    n = len(frames)
    return {"cpu": [c / n * 1000 for c in cpu], "wall": [w / n * 1000 for w in wall],
            "same": outputs[0] == outputs[1], "stats": with_search.landmarker.search_stats}


def stage_ms(results) -> str:
    """Mean wall-clock ms per stage over the run."""
    stages = {}
    for r in results:
        for name, ms in r.latency_ms.items():
            stages.setdefault(name, []).append(ms)
    return ", ".join(f"{name} {np.mean(v):.1f}" for name, v in stages.items())


def score(results, slots: list[Slot], clips, ref_labels, class_names, perfect) -> dict[str, dict]:
    out = {}
    for slot in slots:
        frames, found, agree, compared, ids, agree_perfect = 0, 0, 0, 0, [], 0
        for t, result in enumerate(results):
            src_len = len(clips[slot.source])
            ref = ref_labels[slot.source][slot.source_index(t, src_len)]
            x0, y0, x1, y1 = slot.rect
            inside = [f for f in result.faces if x0 <= (f.box[0] + f.box[2]) / 2 <= x1
                      and y0 <= (f.box[1] + f.box[3]) / 2 <= y1]
            if ref is None:
                continue  # the face is not findable at full size either (a hand over it)
            frames += 1
            agree_perfect += perfect[slot.name][t] == ref
            if inside:
                found += 1
                face = inside[0]
                ids.append(face.track_id)
                compared += 1
                agree += class_names[int(np.argmax(face.raw_probs))] == ref
        switches = sum(a != b for a, b in zip(ids, ids[1:]))
        out[slot.name] = {"nominal": slot.nominal, "frames": frames, "found": found, "agree": agree,
                          "compared": compared, "tracks": len(set(ids)), "id_switches": switches,
                          "agree_perfect": agree_perfect}
    stray = sum(1 for r in results for f in r.faces
                if not any(s.rect[0] <= (f.box[0] + f.box[2]) / 2 <= s.rect[2]
                           and s.rect[1] <= (f.box[1] + f.box[3]) / 2 <= s.rect[3] for s in slots))
    out["elsewhere"] = {"stray": stray}
    return out


def table(title: str, scores: dict[str, dict]) -> None:
    print(f"\n{title}")
    print("| face | frames | landmarked | agreement with full size | the same with perfect landmarks | track ids | "
          "id switches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in scores.items():
        if name == "elsewhere":
            print(f"faces found outside every face's rectangle (false alarms): {s['stray']}")
            continue
        recall = s["found"] / s["frames"] if s["frames"] else float("nan")
        agreement = s["agree"] / s["compared"] if s["compared"] else float("nan")
        agree_text = f"{agreement:.3f}" if s["compared"] else "-"
        perfect = s["agree_perfect"] / s["frames"] if s["frames"] else float("nan")
        print(f"| {name} | {s['frames']} | {recall:.3f} | {agree_text} | {perfect:.3f} | {s['tracks']} | "
              f"{s['id_switches']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="length of the composed 1080p video")
    parser.add_argument("--min-face", type=float, default=DEFAULT_MIN_FACE)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side on the large-face clip")
    parser.add_argument("--large-frames", type=int, default=472, help="frames of the large-face clip (all: 472)")
    parser.add_argument("--keep", type=Path, help="also write the composed video here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from stream_fer.engines.select import load_engine

    videos = shared_dir() / "videos"
    engine = load_engine(threads=1)
    clips = {name: decode(videos / name) for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4")}
    background = decode(videos / "no_face.mp4")

    def analyzer(min_face: float, max_faces: int) -> FrameAnalyzer:
        return FrameAnalyzer(engine, max_faces=max_faces, smoothing="none", mode="video", min_face=min_face)

    with analyzer(0, 1) as ref_analyzer:
        ref = {name: reference(ref_analyzer, frames) for name, frames in clips.items()}
    ref_labels = {name: labels for name, (labels, _, _) in ref.items()}
    ref_points = {name: points for name, (_, points, _) in ref.items()}
    face_height = {name: height for name, (_, _, height) in ref.items()}
    print("full-size reference: median face height " + ", ".join(f"{n} {h:.0f} px" for n, h in face_height.items()))

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "small_faces_1080p.mp4"
        slots = compose(path, args.frames, clips, face_height, background)
        print(f"composed {path.name}: {args.frames} frames {WIDTH}x{HEIGHT}, faces " +
              ", ".join(f"{s.name}" for s in slots))
        perfect = perfect_labels(engine, path, slots, clips, ref_points, ref_analyzer.class_names)
        runs = {}
        for min_face in (0, args.min_face):
            with analyzer(min_face, len(slots) + 2) as a:
                results, fps, cpu_ms = run_video(a, path)
                stats = a.landmarker.search_stats
            runs[min_face] = (score(results, slots, clips, ref_labels, a.class_names, perfect), fps, cpu_ms, stats)
            label = f"min_face={min_face:g}" if min_face else "whole-frame pass only (min_face=0)"
            search = (f"; search {stats['ms'] / len(results):.1f} ms/frame (wall): {stats['tiles']} tiles scanned, "
                      f"{stats['follows']} follows, {stats['found']} found, {stats['lost']} lost") if stats else ""
            table(f"composed 1080p video, {label}: {fps:.2f} fps, {cpu_ms:.1f} CPU ms/frame{search}; "
                  f"stage ms/frame: {stage_ms(results)}", runs[min_face][0])

    # Today's clips. The two sides run frame by frame in turn (their order swapped every frame) on the same
    # decoded frames, so a change in the machine's load hits both alike.
    large_clip = videos / "WolfgangLanger_Pexels.mp4"
    rows = [(large_clip.name, decode(large_clip)[:args.large_frames], max_faces) for max_faces in (1, 2)]
    rows += [(name, decode(videos / name), 1) for name in ("no_face.mp4", "face_noface.mov")]
    changes = {}
    print(f"\ntoday's clips (the large-face clip {large_clip.name}, 640x360, first {len(rows[0][1])} frames; "
          f"no_face.mp4 and face_noface.mov, 960x540, without a face / losing it); the two sides interleaved frame "
          f"by frame, {args.repeats} runs, median (CPU: user + system of the whole process):")
    print("| clip | max faces | CPU ms/frame without | with | change | wall ms/frame without | with | search ran on | "
          "tiles scanned | search wall ms/frame | same results |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, frames, max_faces in rows:
        runs_clip = []
        with analyzer(0, max_faces) as without, analyzer(args.min_face, max_faces) as with_search:
            for _ in range(args.repeats):
                runs_clip.append(run_interleaved(without, with_search, frames))
        cpu0 = statistics.median(r["cpu"][0] for r in runs_clip)
        cpu1 = statistics.median(r["cpu"][1] for r in runs_clip)
        wall0 = statistics.median(r["wall"][0] for r in runs_clip)
        wall1 = statistics.median(r["wall"][1] for r in runs_clip)
        changes[name, max_faces] = statistics.median(r["cpu"][1] / r["cpu"][0] - 1 for r in runs_clip) * 100
        stats = runs_clip[-1]["stats"]
        same = all(r["same"] for r in runs_clip)
        print(f"| {name} | {max_faces} | {cpu0:.2f} | {cpu1:.2f} | {changes[name, max_faces]:+.1f}% | {wall0:.2f} | "
              f"{wall1:.2f} | {stats.get('frames', 0)} frames | {stats.get('tiles', 0)} | "
              f"{stats.get('ms', 0.0) / len(frames):.2f} | {'yes' if same else 'NO'} |")

    scores, fps_with = runs[args.min_face][0], runs[args.min_face][1]
    pooled = [s for name, s in scores.items() if name not in ("large", "elsewhere") and s["nominal"] >= 48]
    recall = sum(s["found"] for s in pooled) / max(1, sum(s["frames"] for s in pooled))
    agreement = sum(s["agree"] for s in pooled) / max(1, sum(s["compared"] for s in pooled))
    print(f"small faces: recall {recall:.3f} at >=48 px, agreement {agreement:.3f}, fps {fps_with:.2f} "
          f"(large-face clip change {changes[large_clip.name, 1]:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
