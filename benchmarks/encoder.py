"""The annotated video's H.264 encoder: CPU per frame, file size and quality of x264 presets, on annotated frames.

The first --frames frames of VIDEO are analysed and drawn once (every default overlay), then encoded with each
preset / crf pair in turn, alternating over --rounds, one encoder thread as stream_fer.sinks.VideoSink runs it.
CPU is the process's (user + sys, every thread) during the encode; quality is the luma PSNR of the decoded
stream against the frames that went in. This is the measurement behind stream_fer.sinks.DEFAULT_PRESET.

    python benchmarks/encoder.py [VIDEO] [--frames 240] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from stream_fer.train.paths import shared_dir

DEFAULT_VIDEO = shared_dir() / "videos" / "WolfgangLanger_Pexels.mp4"  # STREAM_FER_SHARED, else ../shared
CONFIGS = (("superfast", 23), ("superfast", 22), ("ultrafast", 23), ("ultrafast", 26))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def annotated_frames(video: Path, frames: int) -> tuple[list[np.ndarray], Fraction]:
    """The first `frames` annotated frames as I420 arrays, and the input's frame rate."""
    from stream_fer.analyzer import FrameAnalyzer
    from stream_fer.sources import open_source

    out = []
    with FrameAnalyzer() as analyzer, open_source(str(video)) as source:
        rate = Fraction(source.info.fps or 30).limit_denominator(1001)
        for frame in source:
            annotated, _ = analyzer.analyze(frame)
            out.append(cv2.cvtColor(annotated, cv2.COLOR_RGB2YUV_I420))
            if len(out) >= frames:
                break
    return out, rate


def encode(yuv: list[np.ndarray], rate: Fraction, preset: str, crf: int) -> tuple[float, float, float]:
    """(CPU ms per frame, MB, luma PSNR dB) of one encode."""
    import av

    h, w = yuv[0].shape[0] * 2 // 3, yuv[0].shape[1]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        c0 = _cpu()
        for i, frame in enumerate(yuv):
            vf = av.VideoFrame.from_ndarray(frame, format="yuv420p")
            vf.pts = i
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        cpu = _cpu() - c0
    data = buf.getvalue()
    with av.open(io.BytesIO(data)) as decoded:
        luma = [f.to_ndarray(format="yuv420p")[:h] for f in decoded.decode(video=0)]
    mse = np.mean([np.mean((d.astype(np.float64) - y[:h]) ** 2) for d, y in zip(luma, yuv)])
    return cpu / len(yuv) * 1000.0, len(data) / 1e6, float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, nargs="?", default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"encoder: no video at {args.video} (pass one, or set STREAM_FER_SHARED)", file=sys.stderr)
        return 2
    yuv, rate = annotated_frames(args.video, args.frames)
    print(f"{len(yuv)} annotated frames of {args.video.name}, {yuv[0].shape[1]}x{yuv[0].shape[0] * 2 // 3}")
    for r in range(args.rounds):
        for preset, crf in CONFIGS:
            ms, mb, psnr = encode(yuv, rate, preset, crf)
            print(f"round {r + 1} {preset:10s} crf {crf}: {ms:5.2f} ms CPU/frame, {mb:5.2f} MB, PSNR-Y {psnr:5.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
