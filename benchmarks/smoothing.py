"""What temporal smoothing buys and costs, on a real video: label switches per minute (flicker) against
the delay it adds.

    python benchmarks/smoothing.py [VIDEO] [--model DIR] [--strengths 0.2 0.4 0.6 0.8] [--no-results]

The raw per-frame model output (one face: the largest) is computed once per (video, model) with the
product's own stages (FrameAnalyzer.detect + classify, MediaPipe in VIDEO mode) and cached, so strategies
are compared in seconds. Then, for every strategy and strength, the smoothed label sequence is measured:

- switches/min: changes of the displayed label per minute of video;
- xcorr lag: the shift (ms) that best aligns the smoothed probability curves with a lag-free reference,
  the centred (non-causal) 0.5 s moving average of the raw curves (cross-correlation of the mean-removed
  curves, summed over classes, over shifts of 0..1 s; against the raw curves themselves the frame noise
  would pull every peak to 0);
- change delay: at each stable change of the hindsight label (the label of that centred moving average;
  the old label held >= 0.25 s before, the new one >= 0.25 s after), the time until the smoothed label
  becomes the new label (median, ms; within 2 s; 0 when it already had);
- agreement: the share of frames where the smoothed label equals a centred (non-causal, lag-free)
  0.5 s moving-average label: how close the causal filter gets to the best hindsight answer.

Prints a table and replaces the "## Smoothing" section of benchmarks/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_fer.paths import cache_dir  # noqa: E402
from stream_fer.smoothing import FULL_STRENGTH_DELAY_S, SMOOTHING_STRATEGIES, make_smoother  # noqa: E402
from stream_fer.train.paths import shared_dir  # noqa: E402

log = logging.getLogger("benchmarks.smoothing")

SHARED = shared_dir()
DEFAULT_VIDEO = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Smoothing"
STABLE_S = 0.25
MAX_DELAY_S = 2.0
MAX_LAG_S = 1.0
REFERENCE_WINDOW_S = 0.5


def _sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit) if limit else f.read())
    return h.hexdigest()


def raw_outputs(video: Path, engine, landmarker) -> dict[str, np.ndarray]:
    """Per frame: timestamp (s), has_face, raw probs (K,) of the largest face (NaN without a face)."""
    import av

    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.frames import Frame

    times, probs, found = [], [], []
    t0 = time.perf_counter()
    with FrameAnalyzer(engine, landmarker_path=landmarker, max_faces=1, mode="video") as analyzer, \
            av.open(str(video)) as container:
        stream = container.streams.video[0]
        k = len(analyzer.class_names)
        for i, vf in enumerate(container.decode(stream)):
            ts = float(vf.pts * vf.time_base) if vf.pts is not None else i / float(stream.average_rate or 30)
            frame = Frame(i, ts, time.monotonic(), vf.to_ndarray(format="rgb24"))
            classified = analyzer.classify(analyzer.detect(frame))
            times.append(ts)
            if classified.faces:
                face = max(classified.faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                probs.append(face.raw_probs)
                found.append(True)
            else:
                probs.append(np.full(k, np.nan, np.float32))
                found.append(False)
    log.info("raw outputs for %d frames in %.1f s", len(times), time.perf_counter() - t0)
    sha = engine.info.onnx_sha256[:12] or "unknown"
    folder = Path(getattr(engine, "model_dir", "model")).resolve()
    where = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    return {"timestamp": np.array(times), "probs": np.array(probs, dtype=np.float32),
            "has_face": np.array(found), "class_names": np.array(analyzer.class_names),
            "model": np.array(f"{where} (onnx sha256 {sha}...)")}


def cached_raw_outputs(video: Path, model_dir, landmarker) -> dict[str, np.ndarray]:
    from stream_fer.engines.select import load_engine

    engine = load_engine(model_dir, backend="onnxruntime")
    model_key = engine.info.onnx_sha256 or engine.info.to_json()
    onnx = getattr(engine, "model_dir", None)
    if onnx is not None and (Path(onnx) / "model.onnx").is_file():
        model_key += _sha256(Path(onnx) / "model.onnx")
    key = hashlib.sha256(f"{_sha256(video)}|{model_key}|v2".encode()).hexdigest()[:16]
    path = cache_dir() / "benchmarks" / f"smoothing-raw-{video.stem}-{key}.npz"
    if path.exists():
        log.info("using cached raw outputs %s", path)
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = raw_outputs(video, engine, landmarker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(path)
    return data


def smooth(name: str, strength: float, probs: np.ndarray, times: np.ndarray, has_face: np.ndarray,
           max_missed: int = 5) -> np.ndarray:
    """Smoothed probabilities per frame (NaN where there is no face); the track (and its state) ends after
    max_missed frames without a face, as in the product."""
    smoother = make_smoother(name, strength)
    out = np.full_like(probs, np.nan)
    track, missed = 1, 0
    for i in range(len(probs)):
        if not has_face[i]:
            missed += 1
            if missed == max_missed + 1:
                smoother.end(track)
                track += 1
            continue
        missed = 0
        out[i] = smoother.update(track, probs[i], float(times[i]))
    return out


def labels_of(probs: np.ndarray) -> np.ndarray:
    lab = np.full(len(probs), -1)
    ok = ~np.isnan(probs).any(axis=1)
    lab[ok] = probs[ok].argmax(axis=1)
    return lab


def switches(labels: np.ndarray) -> int:
    seen = labels[labels >= 0]
    return int((np.diff(seen) != 0).sum())


def xcorr_lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_lag: int) -> int:
    ok = ~np.isnan(raw).any(axis=1)
    a = raw[ok] - raw[ok].mean(axis=0)
    b = smoothed[ok] - smoothed[ok].mean(axis=0)
    scores = [float((a[: len(a) - lag] * b[lag:]).sum()) for lag in range(max_lag + 1)]
    return int(np.argmax(scores))


def stable_changes(labels: np.ndarray, hold: int) -> list[tuple[int, int]]:
    """(frame, new label) where labels change from a run of >= hold frames to a run of >= hold frames."""
    out = []
    runs = []  # (start, length, label)
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        runs.append((i, j - i, labels[i]))
        i = j
    for (_s0, n0, l0), (s1, n1, l1) in zip(runs, runs[1:]):
        if l0 >= 0 and l1 >= 0 and n0 >= hold and n1 >= hold:
            out.append((s1, int(l1)))
    return out


def change_delays(raw_labels: np.ndarray, smoothed_labels: np.ndarray, hold: int,
                  max_delay: int) -> list[int]:
    delays = []
    for frame, new in stable_changes(raw_labels, hold):
        later = np.nonzero(smoothed_labels[frame:frame + max_delay + 1] == new)[0]
        if len(later):
            delays.append(int(later[0]))
    return delays


def centred_reference(probs: np.ndarray, half: int) -> np.ndarray:
    """The centred moving average of the probabilities (2 * half + 1 frames): a lag-free hindsight
    estimate."""
    ok = ~np.isnan(probs).any(axis=1)
    ref = np.full_like(probs, np.nan)
    for i in np.nonzero(ok)[0]:
        lo, hi = max(0, i - half), min(len(probs), i + half + 1)
        window = probs[lo:hi][ok[lo:hi]]
        ref[i] = window.mean(axis=0)
    return ref


def evaluate(data: dict[str, np.ndarray], strengths: list[float]) -> tuple[list[dict], dict]:
    times, probs, has_face = data["timestamp"], data["probs"], data["has_face"]
    n = len(times)
    fps = (n - 1) / (times[-1] - times[0]) if n > 1 else 30.0
    minutes = n / fps / 60.0
    hold, max_delay, max_lag = round(STABLE_S * fps), round(MAX_DELAY_S * fps), round(MAX_LAG_S * fps)
    raw_labels = labels_of(probs)
    ref_probs = centred_reference(probs, round(REFERENCE_WINDOW_S * fps / 2))
    reference = labels_of(ref_probs)
    valid = raw_labels >= 0
    rows = []
    for name in SMOOTHING_STRATEGIES:
        for strength in ([0.0] if name == "none" else strengths):
            sm = smooth(name, strength, probs, times, has_face)
            lab = labels_of(sm)
            delays = change_delays(reference, lab, hold, max_delay)
            rows.append({
                "strategy": name, "strength": strength,
                "switches_per_min": switches(lab) / minutes,
                "xcorr_lag_ms": 1000.0 * xcorr_lag_frames(ref_probs, sm, max_lag) / fps,
                "delay_ms": 1000.0 * float(np.median(delays)) / fps if delays else float("nan"),
                "delay_n": len(delays),
                "agreement": float((lab[valid] == reference[valid]).mean()) if valid.any() else float("nan"),
            })
    counts = np.bincount(raw_labels[valid], minlength=len(data["class_names"]))
    meta = {"frames": n, "fps": fps, "faces": int(has_face.sum()),
            "stable_changes": len(stable_changes(reference, hold)), "raw_switches": switches(raw_labels),
            "raw_label_counts": dict(zip(map(str, data["class_names"]), counts.tolist()))}
    return rows, meta


def table(rows: list[dict]) -> str:
    head = "| strategy | strength | switches/min | xcorr lag (ms) | change delay (ms, median) | agreement |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        delay = "-" if np.isnan(r["delay_ms"]) else f"{r['delay_ms']:.0f} (n={r['delay_n']})"
        lines.append(f"| {r['strategy']} | {r['strength']:.1f} | {r['switches_per_min']:.1f} | "
                     f"{r['xcorr_lag_ms']:.0f} | {delay} | {r['agreement']:.3f} |")
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace this benchmark's section of RESULTS.md (or add it at the end), keeping every other one."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        after = lines[end:]
        body = lines[:start] + text.rstrip("\n").splitlines() + ([""] + after if after else [])
        new = "\n".join(body) + "\n"
    tmp = path.with_suffix(".md.part")
    tmp.write_text(new)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    p.add_argument("--model", type=Path, default=None,
                   help="exported model folder (default: engines/default)")
    p.add_argument("--landmarker", type=Path, default=None, help="face_landmarker.task (default: resolved)")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.video.is_file():
        print(f"error: video not found: {args.video}", file=sys.stderr)
        return 2
    landmarker = args.landmarker
    if landmarker is None and (SHARED / "models" / "face_landmarker.task").is_file():
        from stream_fer.errors import StreamFerError
        from stream_fer.model_files import resolve_landmarker

        try:
            resolve_landmarker()
        except StreamFerError:
            landmarker = SHARED / "models" / "face_landmarker.task"
    data = cached_raw_outputs(args.video, args.model, landmarker)
    model = data.get("model")
    model = str(model) if model is not None else "?"
    rows, meta = evaluate(data, args.strengths)
    out = table(rows)
    print(out)
    counts = ", ".join(f"{k} {v}" for k, v in meta["raw_label_counts"].items() if v)
    summary = (
        f"{SECTION}\n\n`python benchmarks/smoothing.py` on {args.video.name} with the model in {model}: "
        f"{meta['frames']} frames "
        f"at {meta['fps']:.3f} fps, a face in {meta['faces']}; raw labels: {counts}; "
        f"{meta['raw_switches']} raw label switches, {meta['stable_changes']} stable changes of the "
        f"hindsight label (each label held >= {STABLE_S} s).\n"
        f"Strength s sets a time constant of s x {FULL_STRENGTH_DELAY_S} s. switches/min: label changes "
        f"per minute; xcorr lag: shift that best aligns the smoothed probability curves with the centred "
        f"(hindsight, lag-free) {REFERENCE_WINDOW_S} s mean curves; change delay: time from a stable change "
        f"of the hindsight label until the smoothed label follows; agreement: share of frames equal to the "
        f"label of those centred mean curves.\n\n{out}\n")
    if not args.no_results:
        write_section(summary)
        print(f"\nwrote the {SECTION!r} section of {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
