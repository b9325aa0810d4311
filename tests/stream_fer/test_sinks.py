"""Sinks: the video keeps the input's frame count, timing and audio; only audio that decodes goes in, and
audio the container cannot hold is re-encoded; anamorphic input comes out at its display aspect; an
interrupted video is still playable; row files have a fixed header and are readable before they are closed;
unwritable paths fail up front. Outputs are decoded strictly, every packet of every stream."""

from __future__ import annotations

import csv
import json
import os
from fractions import Fraction

import numpy as np
import pytest
from media import (
    CLIPS,
    SAMPLE,
    anamorphic_copy,
    audio_packets,
    audio_span,
    damaged_copy,
    decode_times,
    pcm_avi_copy,
    strict_decode,
    synthetic_video,
)

from stream_fer.errors import StreamFerError
from stream_fer.frames import FrameResult
from stream_fer.records import ROW_FIELDS, to_row
from stream_fer.sinks import CsvSink, ImageSink, JsonlSink, VideoSink, check_writable
from stream_fer.sources import FileSource


def _empty_result(frame) -> FrameResult:
    return FrameResult(frame.index, frame.timestamp, ())


def _copy(src, dst, limit=None, **kwargs) -> VideoSink:
    with FileSource(src) as source:
        sink = VideoSink(dst, source.info, **kwargs)
        try:
            for frame in source:
                sink.write(frame, _empty_result(frame), frame.rgb)
                if limit and sink.frames >= limit:
                    break
        finally:
            sink.close()
    return sink


@pytest.mark.parametrize("name", list(CLIPS))
def test_video_keeps_frame_count_timing_and_audio(clips, tmp_path, name):
    src = clips[name]
    out = tmp_path / "out.mp4"
    _copy(src, out, preset="ultrafast")
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    assert audio_packets(out) == audio_packets(src)  # remuxed: same codec, every packet
    assert strict_decode(out)["video"] == CLIPS[name]  # and every audio packet decodes


def test_damaged_audio_packets_are_left_out_and_counted_once(clips, tmp_path, caplog):
    """Every 7th audio packet garbled: the output has every video frame and only the audio that decodes,
    so a strict decoder reads it end to end; the left-out packets are one warning with their count."""
    src = damaged_copy(clips[SAMPLE], tmp_path / "damaged.mp4", audio_every=7)
    with pytest.raises(AssertionError, match="audio packet .* does not decode"):
        strict_decode(src)  # the input really is damaged
    out = tmp_path / "out.mp4"
    with caplog.at_level("WARNING", logger="stream_fer.sinks"):
        sink = _copy(src, out, preset="ultrafast")
    garbled = -(-audio_packets(src)[0][1] // 7)  # packets 3, 10, 17, ...: ceil(n / 7)
    assert [r.getMessage() for r in caplog.records] == [
        f"out.mp4: left out {garbled} audio packet(s) of the input that do not decode"]
    counts = strict_decode(out)
    assert counts["video"] == CLIPS[SAMPLE]
    assert audio_packets(out) == [("aac", audio_packets(src)[0][1] - garbled)] and sink.audio_packets > 0
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)


def test_audio_the_output_cannot_hold_is_reencoded_with_its_timing(clips, tmp_path):
    """16-bit PCM in an AVI going to MP4 (which cannot hold it) becomes AAC over the same span of time;
    a container that holds PCM (MKV) gets it copied; only copy_audio=False (--no-audio) leaves it out."""
    src = pcm_avi_copy(clips[SAMPLE], tmp_path / "camera.avi", frames=24)
    codec, start, end, samples = audio_span(src)
    assert codec == "pcm_s16le"
    out = tmp_path / "out.mp4"
    _copy(src, out, preset="ultrafast")
    assert strict_decode(out)["video"] == 24
    aac, aac_start, aac_end, aac_samples = audio_span(out)
    frame = 1024 / 48000  # one AAC frame
    assert aac == "aac" and abs(aac_start - start) < 1e-3 and abs(aac_end - end) < frame
    assert abs(aac_samples - samples) < 1024
    assert decode_times(out) == pytest.approx(decode_times(src), abs=1e-6)
    _copy(src, tmp_path / "out.mkv", preset="ultrafast")
    assert audio_packets(tmp_path / "out.mkv")[0][0] == "pcm_s16le"
    _copy(src, tmp_path / "silent.mp4", copy_audio=False, preset="ultrafast")
    assert audio_packets(tmp_path / "silent.mp4") == []


def test_anamorphic_input_keeps_its_display_aspect(clips, tmp_path):
    """480x360 with 4:3 pixels (16:9 on screen) comes out as 640x360 square pixels: 16:9 on screen too."""
    import av

    src = anamorphic_copy(clips[SAMPLE], tmp_path / "anamorphic.mp4", frames=4)
    out = tmp_path / "out.mp4"
    _copy(src, out, preset="ultrafast")
    with av.open(str(src)) as i, av.open(str(out)) as o:
        vin, vout = i.streams.video[0], o.streams.video[0]
        assert (vin.codec_context.width, vin.codec_context.height) == (480, 360)
        assert (vout.codec_context.width, vout.codec_context.height) == (640, 360)
        assert (vout.sample_aspect_ratio or 1) == 1  # square pixels: display aspect = 640:360
        assert vin.display_aspect_ratio == Fraction(16, 9) == Fraction(vout.codec_context.width,
                                                                       vout.codec_context.height)
    assert strict_decode(out)["video"] == 4


def test_interrupted_video_is_playable_with_matching_audio(clips, tmp_path):
    src = clips[SAMPLE]  # audio from 0 s
    out = tmp_path / "part.mp4"
    _copy(src, out, limit=40, preset="ultrafast")
    times = decode_times(out)
    assert times == pytest.approx(decode_times(src)[:40], abs=1e-6)
    (_, packets), = audio_packets(out)
    (_, all_packets), = audio_packets(src)
    assert 0 < packets < all_packets  # the audio stops with the video


def test_video_without_audio_copy(clips, tmp_path):
    out = tmp_path / "silent.mp4"
    _copy(clips[SAMPLE], out, limit=5, copy_audio=False, preset="ultrafast")
    assert audio_packets(out) == []
    assert len(decode_times(out)) == 5


def _x264_options(path) -> str:
    """The encoder settings x264 writes into the stream (its user-data SEI: 'options: cabac=0 ref=1 ...')."""
    data = path.read_bytes()
    start = data.index(b"options: ") + len(b"options: ")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_annotated_videos_use_the_ultrafast_preset_unless_asked_otherwise(clips, tmp_path):
    """The default trades file size for CPU per frame (stream_fer.sinks.DEFAULT_PRESET); --preset takes it back."""
    _copy(clips[SAMPLE], tmp_path / "default.mp4", limit=3, copy_audio=False)
    _copy(clips[SAMPLE], tmp_path / "superfast.mp4", limit=3, copy_audio=False, preset="superfast")
    default, superfast = _x264_options(tmp_path / "default.mp4"), _x264_options(tmp_path / "superfast.mp4")
    assert "cabac=0" in default.split() and "subme=0" in default.split()  # ultrafast's signature
    assert "cabac=1" in superfast.split() and "subme=1" in superfast.split()


def test_odd_frame_size_is_padded(tmp_path):
    src = synthetic_video(tmp_path / "odd.mp4", frames=4, size=(160, 120))
    with FileSource(src) as source:
        info = source.info
        frames = list(source)
    from dataclasses import replace

    odd = replace(info, width=159, height=119, has_audio=False)
    sink = VideoSink(tmp_path / "out.mp4", odd, preset="ultrafast")
    for f in frames:
        sink.write(f, _empty_result(f), f.rgb[:119, :159])
    sink.close()
    assert len(decode_times(tmp_path / "out.mp4")) == 4


def test_a_video_sink_with_no_frames_leaves_no_file(tmp_path):
    src = synthetic_video(tmp_path / "in.mp4", frames=2)
    with FileSource(src) as source:
        sink = VideoSink(tmp_path / "never.mp4", source.info)
    sink.close()
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.parametrize("path", ["/proc/x.mp4", "/sys/x.mp4", "/dev/null/x.mp4"])
def test_unwritable_paths_fail_up_front(path):
    with pytest.raises(StreamFerError, match="cannot write"):
        check_writable(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_fails_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StreamFerError, match="cannot write"):
            check_writable(ro / "out.mp4")
    finally:
        ro.chmod(0o755)


def test_check_writable_leaves_no_file_behind(tmp_path):
    check_writable(tmp_path / "sub" / "out.csv")
    assert not (tmp_path / "sub" / "out.csv").exists()


def test_csv_header_is_fixed_before_any_row_and_rows_are_flushed(tmp_path):
    path = tmp_path / "rows.csv"
    sink = CsvSink(path, ROW_FIELDS, to_row, flush_every=0.0)
    with open(path) as f:
        assert next(csv.reader(f)) == list(ROW_FIELDS)  # before any frame
    from stream_fer.frames import Frame

    frame = Frame(index=3, timestamp=0.1, capture_time=0.0, rgb=np.zeros((2, 2, 3), np.uint8))
    sink.write(frame, _empty_result(frame), None)
    with open(path) as f:  # readable while still open: a crash keeps what was written
        rows = list(csv.DictReader(f))
    sink.close()
    assert len(rows) == 1
    assert rows[0]["frame_index"] == "3" and rows[0]["num_faces"] == "0" and rows[0]["track_id"] == ""


def test_jsonl_rows(tmp_path):
    from stream_fer.frames import Frame

    path = tmp_path / "rows.jsonl"
    sink = JsonlSink(path, to_row)
    for i in range(3):
        frame = Frame(index=i, timestamp=i / 30, capture_time=0.0, rgb=np.zeros((2, 2, 3), np.uint8))
        sink.write(frame, _empty_result(frame), None)
    sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["frame_index"] for r in rows] == [0, 1, 2]
    assert list(rows[0]) == list(ROW_FIELDS) and rows[0]["label"] is None


def test_image_sink(tmp_path, stills):
    from stream_fer.images import read_rgb

    rgb = read_rgb(stills[0])
    sink = ImageSink(tmp_path / "out.png")
    sink.write(None, None, rgb)
    sink.close()
    assert np.array_equal(read_rgb(tmp_path / "out.png"), rgb)
