"""Media helpers for the pipeline tests: the clips (the shipped sample and the shared ones), broken files made
from them, and a two-face clip composed from two real clips side by side."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE = "sample.mp4"  # shipped in the package (stream_fer/data/): always there
# name -> frames a player shows (no_face.mp4 declares 98 but its edit list discards 3 pre-roll frames)
CLIPS = {SAMPLE: 96, "single_face.mp4": 72, "face_noface.mov": 169, "no_face.mp4": 95}


def decode_times(path: Path) -> list[float]:
    """Presentation time (s) of every frame a decoder outputs."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * stream.time_base) for f in container.decode(stream)]


def audio_packets(path: Path) -> list[tuple[str, int]]:
    """(codec, packet count) per audio stream."""
    import av

    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        counts = {s.index: 0 for s in streams}
        if streams:
            for packet in container.demux(*streams):
                if packet.size:
                    counts[packet.stream.index] += 1
        return [(s.codec_context.name, counts[s.index]) for s in streams]


def truncated_copy(src: Path, dst: Path, fraction: float = 0.3) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def faststart_copy(src: Path, dst: Path) -> Path:
    """The same streams remuxed with the index (moov) at the front, so a truncated copy still opens."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams if s.type in ("video", "audio")}
        for packet in i.demux(*[i.streams[k] for k in streams]):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            o.mux(packet)
    return dst


def zero_frame_video(dst: Path) -> Path:
    """An AVI whose video stream has no frames (MP4 and MKV drop or reject an empty track)."""
    import av

    with av.open(str(dst), "w") as o:
        s = o.add_stream("mjpeg", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuvj420p"
        o.start_encoding()
    return dst


def side_by_side(left: Path, right: Path, dst: Path, max_frames: int | None = None) -> Path:
    """A clip with `left` and `right` next to each other (heights matched), the length of the shorter,
    at `left`'s timing."""
    import av

    with av.open(str(left)) as a, av.open(str(right)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        h = min(sa.codec_context.height, sb.codec_context.height)
        with av.open(str(dst), "w") as o:
            out = o.add_stream("libx264", rate=sa.average_rate, options={"preset": "ultrafast", "crf": "20"})
            out.codec_context.time_base = sa.time_base
            n = 0
            for fa, fb in zip(a.decode(sa), b.decode(sb)):
                ra = fa.to_ndarray(format="rgb24")[:h]
                rb = fb.to_ndarray(format="rgb24")[:h]
                rgb = np.concatenate([ra, rb], axis=1)
                rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
                if n == 0:
                    out.width, out.height, out.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                vf.pts, vf.time_base = fa.pts, sa.time_base
                for p in out.encode(vf):
                    o.mux(p)
                n += 1
                if max_frames and n >= max_frames:
                    break
            for p in out.encode(None):
                o.mux(p)
    return dst


def synthetic_video(dst: Path, frames: int = 30, size: tuple[int, int] = (160, 120), fps: int = 30,
                    time_base: Fraction = Fraction(1, 15360)) -> Path:
    """A small H.264 clip of moving bars (no faces), for tests that only move frames around."""
    import av

    w, h = size
    with av.open(str(dst), "w") as o:
        s = o.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = time_base
        x = np.arange(w)[None, :, None]
        for i in range(frames):
            rgb = ((x + np.arange(h)[:, None, None] + 7 * i + np.array([0, 80, 160])) % 256).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts, vf.time_base = int(round(i / fps / time_base)), time_base
            for p in s.encode(vf):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    return dst


def sideways_copy(src: Path, dst: Path, frames: int = 6) -> Path:
    """The first frames of `src` stored as a phone stores a portrait video: the picture turned a quarter
    clockwise, with a display rotation of 90 deg (counter-clockwise) that turns it upright again."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        rate = i.streams.video[0].average_rate
        s = None
        for n, frame in enumerate(i.decode(video=0)):
            if n == frames:
                break
            sideways = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), -1))  # clockwise
            if s is None:
                s = o.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
                s.height, s.width = sideways.shape[:2]
                s.pix_fmt = "yuv420p"
                s.set_display_rotation(90)
            for p in s.encode(av.VideoFrame.from_ndarray(sideways, format="rgb24")):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    return dst
