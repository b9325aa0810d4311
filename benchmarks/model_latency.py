"""Two exported models side by side: ONNX Runtime CPU latency per call, one thread, alternating the two
models round by round (this machine is shared and noisy: only ratios within one run mean much).

    python benchmarks/model_latency.py NEW_DIR --against OLD_DIR [--rounds 7] [--calls 200]

For each precision both folders have (FP32 model.onnx; INT8 int8/), at batch 1 (one face) and batch 2 (a face
and its mirror image, what the analyzer runs per face and frame): the median over rounds of the mean wall time
per call and of the process CPU per call. Issue 16 allows a new default model at most 1.5x the old one's
latency at batch 1. Last line: `latency: fp32 R1 x (CPU C1 x), int8 R2 x (CPU C2 x) (batch 1, new / old)`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# `python benchmarks/model_latency.py` puts this folder first on sys.path, where engines.py would shadow the
# `engines` package; drop it, and reach benchmarks/engines.py as `benchmarks.engines` from the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np

from benchmarks.engines import bench_faces  # FER+ test faces, else random pixels

BACKENDS = (("fp32", "onnxruntime-cpu", "model.onnx"), ("int8", "onnxruntime-int8", "int8/model.onnx"))


def _per_call(infer, chunks: list[np.ndarray], calls: int) -> tuple[float, float]:
    """(wall ms, process CPU ms) per call, mean over `calls` calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(calls):
        infer(chunks[i % len(chunks)])
    return 1000 * (time.perf_counter() - t0) / calls, 1000 * (time.process_time() - c0) / calls


def main(argv=None) -> int:
    from stream_fer.engines.select import load_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the new exported model folder")
    parser.add_argument("--against", type=Path, required=True, help="the old exported model folder")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200, help="calls per model, batch and round")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    faces, _ = bench_faces(64)
    dirs = {"new": args.model, "old": args.against}
    ratios = {}
    print(f"new: {args.model}\nold: {args.against}\none thread, {args.rounds} rounds alternating, "
          f"{args.calls} calls per point; median of the rounds' means")
    for precision, backend, rel in BACKENDS:
        if not all((d / rel).is_file() for d in dirs.values()):
            print(f"{precision}: skipped (not exported in both folders)")
            continue
        engines = {k: load_engine(d, backend, threads=1).infer for k, d in dirs.items()}
        for batch in args.batches:
            chunks = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)]
            for infer in engines.values():  # warm-up
                _per_call(infer, chunks, 20)
            got = {k: [] for k in engines}
            for r in range(args.rounds):
                order = ("new", "old") if r % 2 == 0 else ("old", "new")
                for k in order:
                    got[k].append(_per_call(engines[k], chunks, args.calls))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in got.items()}
            ratio = med["new"][0] / med["old"][0]
            print(f"{precision} batch {batch}: new {med['new'][0]:.2f} ms wall, {med['new'][1]:.2f} ms CPU; "
                  f"old {med['old'][0]:.2f} ms wall, {med['old'][1]:.2f} ms CPU; new / old {ratio:.2f} x wall, "
                  f"{med['new'][1] / med['old'][1]:.2f} x CPU")
            if batch == 1:
                ratios[precision] = (ratio, med["new"][1] / med["old"][1])
    print("latency: " + ", ".join(f"{p} {w:.2f} x (CPU {c:.2f} x)" for p, (w, c) in ratios.items())
          + " (batch 1, new / old)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
