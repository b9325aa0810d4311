"""Regenerate the sample clip shipped in the package (stream_fer/data/sample.mp4): 4 s cut from the shared
WolfgangLanger_Pexels.mp4 (source frames 216-311: a hand at the mouth, then a smile, then a laugh), mirrored so the
face sits left of centre with room for the overlay's panel on its right, re-encoded with PyAV (H.264 and AAC,
index at the front), audio cut to the same span.

    python docs/make_sample_clip.py [--source PATH] [--out stream_fer/data/sample.mp4]

Credit (Pexels licence: free to use and modify, keep the credit): video by Wolfgang Langer from Pexels,
https://www.pexels.com/video/a-woman-exhibits-different-emotions-through-facial-expressions-3063838/
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIRST, COUNT = 216, 96  # source frames [FIRST, FIRST + COUNT)
AUDIO_FRAME = 1024  # samples per AAC frame


def _video(src, out, first: int, count: int) -> tuple[float, float]:
    """Copy frames [first, first + count) mirrored; returns the span (start, end) in source seconds."""
    import av

    vin = src.streams.video[0]
    vout = out.add_stream("libx264", rate=vin.average_rate, options={"preset": "slow", "crf": "23"})
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.codec_context.time_base = vin.time_base
    start = end = None
    for n, frame in enumerate(src.decode(vin)):
        if n < first:
            continue
        if n >= first + count:
            end = float(frame.pts * vin.time_base)
            break
        if start is None:
            start_pts, start = frame.pts, float(frame.pts * vin.time_base)
        rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:, ::-1])
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vf.pts, vf.time_base = frame.pts - start_pts, vin.time_base
        for packet in vout.encode(vf):
            out.mux(packet)
    for packet in vout.encode(None):
        out.mux(packet)
    return start, end


def _audio_samples(path: Path, start: float, end: float) -> tuple[np.ndarray, int, str]:
    """(channels, samples) float32 of the first audio stream between start and end seconds."""
    import av

    with av.open(str(path)) as src:
        ain = src.streams.audio[0]
        rate, layout = ain.codec_context.sample_rate, ain.layout.name
        chunks, first_sample = [], None
        for frame in src.decode(ain):
            t = float(frame.pts * ain.time_base)
            if first_sample is None:
                first_sample = int(round(t * rate))
            chunks.append(frame.to_ndarray())  # fltp: (channels, samples)
    samples = np.concatenate(chunks, axis=1)
    a, b = int(round(start * rate)) - first_sample, int(round(end * rate)) - first_sample
    return np.ascontiguousarray(samples[:, max(0, a):b], dtype=np.float32), rate, layout


def main(argv: list[str] | None = None) -> int:
    import av
    from stream_fer.train.paths import shared_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=shared_dir() / "videos" / "WolfgangLanger_Pexels.mp4")
    p.add_argument("--out", type=Path, default=REPO / "stream_fer" / "data" / "sample.mp4")
    args = p.parse_args(argv)
    with av.open(str(args.source)) as src:
        vin = src.streams.video[0]
        span = (FIRST * vin.average_rate ** -1, (FIRST + COUNT) * vin.average_rate ** -1)
    samples, rate, layout = _audio_samples(args.source, float(span[0]), float(span[1]))
    with av.open(str(args.source)) as src, av.open(str(args.out), "w", options={"movflags": "+faststart"}) as out:
        aout = out.add_stream("aac", rate=rate, layout=layout)
        aout.bit_rate = 96_000
        _video(src, out, FIRST, COUNT)
        tb = Fraction(1, rate)
        for k in range(0, samples.shape[1], AUDIO_FRAME):
            chunk = samples[:, k:k + AUDIO_FRAME]
            if chunk.shape[1] < AUDIO_FRAME:  # the encoder takes whole frames: pad the last with silence
                chunk = np.pad(chunk, ((0, 0), (0, AUDIO_FRAME - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, k, tb
            for packet in aout.encode(frame):
                out.mux(packet)
        for packet in aout.encode(None):
            out.mux(packet)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
