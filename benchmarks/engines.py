"""Engine speed: faces per second and latency at batch 1, 4 and 32 for every backend this machine can run,
and the ratio to PyTorch eager (the training model's own forward pass) on the same machine.

    python -m benchmarks.engines                      # the shipped default model (engines/default)
    python -m benchmarks.engines --model DIR --checkpoint CKPT --threads 2 --seconds 3 --json out.json

Rows: torch-eager-cpu (the baseline: AUNet.forward in FP32 with the input normalisation and softmax),
onnxruntime-cpu with the FP32 model and, when the model folder has an fp16/ export, with the FP16 model;
onnxruntime-int8 when it has an int8/ export;
torch-cpu (the torch backend). With an NVIDIA GPU also torch-eager-cuda (FP32, the GPU baseline),
torch-cuda (FP16), onnxruntime-cuda and tensorrt, each where installed. A backend that cannot start here
is listed with the reason. Faces are real FER+ test images when available, else random pixels (the speed
of this network does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# `python benchmarks/engines.py` puts this folder first on sys.path, where this file would shadow the
# `engines` package it measures; drop it (`python -m benchmarks.engines` does not need this).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np

BATCHES = (1, 4, 32)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_faces(n: int = 256) -> tuple[np.ndarray, str]:
    try:
        from stream_fer.train.export import ferplus_faces

        faces = ferplus_faces(n)
    except ImportError:  # no training extras: random pixels measure the same
        faces = np.zeros((0, 48, 48), np.uint8)
    if len(faces) == n:
        return faces, "FER+ test images"
    return np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8), "random pixels"


def measure(fn, faces: np.ndarray, batch: int, seconds: float, min_iters: int = 5, sync=None) -> dict:
    """Latency of fn(batch of faces) in ms (p50, p90) and faces/s (batch / mean latency)."""
    chunks = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)] or [faces[:batch]]
    for i in range(3):  # warm-up (first-call allocation, kernel selection)
        fn(chunks[i % len(chunks)])
    if sync:
        sync()
    times, start, i = [], time.perf_counter(), 0
    while i < min_iters or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn(chunks[i % len(chunks)])
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
        i += 1
    mean = statistics.fmean(times)
    times.sort()
    return {"batch": batch, "iters": len(times), "p50_ms": 1000 * times[len(times) // 2],
            "p90_ms": 1000 * times[min(len(times) - 1, int(0.9 * len(times)))], "faces_per_s": batch / mean}


def _torch_eager(checkpoint, device: str, threads: int | None):
    """AUNet.forward as trained (FP32), with normalisation and softmax: the PyTorch eager baseline."""
    import torch

    from stream_fer.train.model import build_model, normalise

    if threads:
        torch.set_num_threads(threads)
    if checkpoint:
        from stream_fer.train.checkpoint import load_model

        model, _ = load_model(checkpoint)
    else:
        model = build_model().eval()
    model = model.to(device)

    @torch.inference_mode()
    def run(faces):
        x = normalise(torch.from_numpy(faces).to(device), model.config)
        logits, attention, cams = model(x)
        return torch.softmax(logits, 1).cpu().numpy(), attention.cpu().numpy(), cams.cpu().numpy()

    return run


def candidates(model_dir: Path, checkpoint, threads: int | None):
    """(row name, precision, device, factory) for everything that might run here; factory() -> infer fn."""
    from stream_fer.engines.select import INT8_SUBDIR, installed, load_engine, nvidia_gpu_present, tensorrt_model_dir

    fp16_dir = tensorrt_model_dir(model_dir)
    has_fp16 = fp16_dir != model_dir
    gpu = nvidia_gpu_present()
    rows = []
    if installed("torch"):
        rows.append(("torch-eager-cpu", "fp32", "cpu", lambda: _torch_eager(checkpoint, "cpu", threads)))
    rows.append(("onnxruntime-cpu", "fp32", "cpu",
                 lambda: load_engine(model_dir, "onnxruntime-cpu", threads=threads).infer))
    if has_fp16:
        rows.append(("onnxruntime-cpu", "fp16", "cpu",
                     lambda: load_engine(fp16_dir, "onnxruntime-cpu", threads=threads).infer))
    if (model_dir / INT8_SUBDIR / "model.onnx").is_file():
        rows.append(("onnxruntime-int8", "int8", "cpu",
                     lambda: load_engine(model_dir, "onnxruntime-int8", threads=threads).infer))
    if installed("torch") and checkpoint:
        rows.append(("torch-cpu", "fp32", "cpu",
                     lambda: load_engine(model_dir, "torch-cpu", checkpoint, threads=threads).infer))
    if gpu:
        if installed("torch"):
            rows.append(("torch-eager-cuda", "fp32", "cuda", lambda: _torch_eager(checkpoint, "cuda", None)))
            if checkpoint:
                rows.append(("torch-cuda", "fp16", "cuda",
                             lambda: load_engine(model_dir, "torch-cuda", checkpoint).infer))
        rows.append(("onnxruntime-cuda", "fp32", "cuda",
                     lambda: load_engine(model_dir, "onnxruntime-cuda").infer))
        rows.append(("tensorrt", "fp16" if has_fp16 else "fp32", "cuda",
                     lambda: load_engine(model_dir, "tensorrt").infer))
    else:
        rows.append(("torch-cuda / onnxruntime-cuda / tensorrt", "-", "cuda", None))
    return rows


def _cuda_sync():
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    except ImportError:
        pass
    return None


def run(args) -> dict:
    from stream_fer.engines import default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    checkpoint = args.checkpoint
    if checkpoint is None and (model_dir / "checkpoint.pt").is_file():
        checkpoint = str(model_dir / "checkpoint.pt")
    faces, source = bench_faces()
    threads = args.threads
    report = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
              "model": str(model_dir), "checkpoint": checkpoint or "untrained build_model() (same network)",
              "faces": source, "threads": threads or "runtime default", "seconds_per_point": args.seconds,
              "rows": []}
    try:
        import onnxruntime

        report["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import torch

        report["machine"]["torch"] = torch.__version__
    except ImportError:
        pass
    for name, precision, device, factory in candidates(model_dir, checkpoint, threads):
        if factory is None:
            report["rows"].append({"backend": name, "precision": precision, "device": device,
                                   "skipped": "no NVIDIA GPU on this machine"})
            continue
        try:
            fn = factory()
        except Exception as exc:  # noqa: BLE001 (report and go on: one backend's failure is a result)
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            report["rows"].append({"backend": name, "precision": precision, "device": device, "skipped": why})
            continue
        sync = _cuda_sync() if device == "cuda" else None
        for batch in args.batches:
            point = measure(fn, faces, batch, args.seconds, sync=sync)
            report["rows"].append({"backend": name, "precision": precision, "device": device, **point})
    baseline = {(r["device"], r["batch"]): r["faces_per_s"] for r in report["rows"]
                if r["backend"].startswith("torch-eager") and "faces_per_s" in r}
    for r in report["rows"]:
        if "faces_per_s" in r:
            base = baseline.get((r["device"], r["batch"])) or baseline.get(("cpu", r["batch"]))
            r["vs_torch_eager"] = r["faces_per_s"] / base if base else None
    return report


def table(report: dict) -> str:
    m = report["machine"]
    head = [(f"machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m.get('onnxruntime', '-')}, "
             f"torch {m.get('torch', '-')}"),
            (f"model: {report['model']}; faces: {report['faces']}; threads: {report['threads']}; "
             f"{report['seconds_per_point']} s per point"),
            "",
            (f"| {'backend':<17} | {'precision':<9} | {'batch':>5} | {'p50 ms':>8} | {'p90 ms':>8} | "
             f"{'faces/s':>9} | {'vs torch eager':>14} |"),
            f"|{'-' * 19}|{'-' * 11}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 16}|"]
    rows = []
    for r in report["rows"]:
        if "skipped" in r:
            rows.append(f"| {r['backend']} | {r['precision']} | not run: {r['skipped']} |")
            continue
        ratio = f"{r['vs_torch_eager']:.2f}x" if r.get("vs_torch_eager") else "-"
        rows.append(f"| {r['backend']:<17} | {r['precision']:<9} | {r['batch']:>5} | {r['p50_ms']:>8.2f} | "
                    f"{r['p90_ms']:>8.2f} | {r['faces_per_s']:>9.0f} | {ratio:>14} |")
    return "\n".join(head + rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="exported model folder (default: engines/default)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint for the torch rows (default: MODEL/checkpoint.pt, else an untrained "
                             "network of the same shape for the eager baseline)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--seconds", type=float, default=3.0, help="time per (backend, batch) point")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every backend")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    report = run(args)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
