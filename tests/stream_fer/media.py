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
    return _remux(src, dst, {"movflags": "faststart"})


def index_last_copy(src: Path, dst: Path) -> Path:
    """The same streams remuxed with the index (moov) at the end, as cameras write it: a truncated copy
    of this does not open at all."""
    return _remux(src, dst, {})


def _remux(src: Path, dst: Path, options: dict[str, str]) -> Path:
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options=options) as o:
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


def strict_decode(path: Path) -> dict[str, int]:
    """Frames decoded per stream type, decoding every packet of every stream with FFmpeg's strictest error
    detection (err_detect=explode); any packet that does not decode fails the calling test."""
    import av

    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            stream.codec_context.options = {"err_detect": "explode"}
        for packet in container.demux():
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                raise AssertionError(f"{path.name}: a {packet.stream.type} packet at pts {packet.pts} does not "
                                     f"decode: {exc}") from None
            counts[packet.stream.type] = counts.get(packet.stream.type, 0) + len(frames)
    return counts


def audio_span(path: Path) -> tuple[str, float, float, int]:
    """(codec, first sample's time, end time, samples) of the first audio stream, decoded."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    first, last = frames[0], frames[-1]
    end = float(last.pts * stream.time_base) + last.samples / last.sample_rate
    return stream.codec_context.name, float(first.pts * stream.time_base), end, sum(f.samples for f in frames)


def damaged_copy(src: Path, dst: Path, audio_every: int = 7, video_every: int = 0, seed: int = 0) -> Path:
    """The same streams remuxed with every `audio_every`-th audio packet (and every `video_every`-th video
    packet that is not a keyframe) garbled after its first quarter, as a damaged download or disk has them."""
    import av

    rng = np.random.default_rng(seed)
    seen = {"audio": 0, "video": 0}
    every = {"audio": audio_every, "video": video_every}
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams if s.type in ("video", "audio")}
        for packet in i.demux(*[i.streams[k] for k in streams]):
            if packet.dts is None:
                continue
            kind = packet.stream.type
            n, seen[kind] = seen[kind], seen[kind] + 1
            if every[kind] and n % every[kind] == every[kind] // 2 and not (kind == "video" and packet.is_keyframe):
                data = bytearray(bytes(packet))
                cut = len(data) // 4
                data[cut:] = rng.integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
                garbled = av.Packet(bytes(data))
                garbled.pts, garbled.dts, garbled.duration = packet.pts, packet.dts, packet.duration
                garbled.time_base = packet.time_base
                garbled.stream = streams[packet.stream.index]
                o.mux(garbled)
                continue
            packet.stream = streams[packet.stream.index]
            o.mux(packet)
    return dst


def pcm_avi_copy(src: Path, dst: Path, frames: int = 24) -> Path:
    """The first `frames` frames of `src` as MJPEG in an AVI, with the same span of its audio as 16-bit PCM
    (a camera or an old editor's file: audio that MP4 cannot hold)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vin, ain = i.streams.video[0], i.streams.audio[0]
        v = o.add_stream("mjpeg", rate=vin.average_rate)
        v.width, v.height, v.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuvj420p"
        a = o.add_stream("pcm_s16le", rate=ain.codec_context.sample_rate, layout=ain.layout.name)
        end = None
        for n, frame in enumerate(i.decode(vin)):
            if n == frames:
                end = float(frame.pts * vin.time_base)
                break
            frame.pts, frame.time_base = n, 1 / Fraction(vin.average_rate)
            for p in v.encode(frame):
                o.mux(p)
        for p in v.encode(None):
            o.mux(p)
        i.seek(0)
        for frame in i.decode(ain):
            if end is not None and float(frame.pts * ain.time_base) >= end:
                break
            frame.pts = None
            for p in a.encode(frame):
                o.mux(p)
        for p in a.encode(None):
            o.mux(p)
    return dst


def anamorphic_copy(src: Path, dst: Path, frames: int = 6, sar: Fraction = Fraction(4, 3)) -> Path:
    """The first `frames` frames of `src` stored anamorphic, as DV and broadcast video are: the picture
    squeezed to 1/sar of its width, with a sample aspect ratio of `sar` that restores its display shape."""
    import av
    import cv2

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vin = i.streams.video[0]
        out = o.add_stream("libx264", rate=vin.average_rate, options={"preset": "ultrafast", "crf": "18"})
        width = int(round(vin.codec_context.width / sar / 2)) * 2
        out.width, out.height, out.pix_fmt = width, vin.codec_context.height, "yuv420p"
        out.codec_context.sample_aspect_ratio = sar
        for n, frame in enumerate(i.decode(vin)):
            if n == frames:
                break
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (width, out.height), interpolation=cv2.INTER_AREA)
            for p in out.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                o.mux(p)
        for p in out.encode(None):
            o.mux(p)
    return dst


def hevc_copy(src: Path, dst: Path, frames: int = 12) -> Path:
    """The first `frames` frames of `src` re-encoded as HEVC (libx265) in a .mov, as an iPhone records."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vin = i.streams.video[0]
        out = o.add_stream("libx265", rate=vin.average_rate,
                           options={"preset": "ultrafast", "x265-params": "log-level=error"})
        out.width, out.height, out.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for n, frame in enumerate(i.decode(vin)):
            if n == frames:
                break
            for p in out.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                o.mux(p)
        for p in out.encode(None):
            o.mux(p)
    return dst


def looped_copy(src: Path, dst: Path, times: int = 4) -> Path:
    """`src` played `times` times in a row (its packets remuxed with shifted times, nothing re-encoded): a
    longer real clip for tests that need a run to last a while."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        streams = {s.index: (s, o.add_stream_from_template(s)) for s in i.streams if s.type in ("video", "audio")}
        packets = [p for p in i.demux(*[s for s, _ in streams.values()]) if p.dts is not None]
        span = {}
        for k in streams:
            dts = [(p.dts, p.duration or 0) for p in packets if p.stream.index == k]
            span[k] = max(d + duration for d, duration in dts) - min(d for d, _ in dts)
        for loop in range(times):
            for p in packets:
                k = p.stream.index
                shifted = av.Packet(bytes(p))
                shifted.pts, shifted.dts = p.pts + loop * span[k], p.dts + loop * span[k]
                shifted.duration, shifted.time_base, shifted.is_keyframe = p.duration, p.time_base, p.is_keyframe
                shifted.stream = streams[k][1]
                o.mux(shifted)
    return dst
