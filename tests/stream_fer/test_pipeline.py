"""The threaded pipeline: order and completeness for files, errors from any stage reach the caller and stop
every thread, Ctrl-C drains and closes, live sources drop; then the real analysis (MediaPipe + a stand-in
engine) on the real clips: same frames and timing out, a row per frame, two stable tracks for two faces."""

from __future__ import annotations

import _thread
import csv
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fake_engine import FakeEngine
from media import CLIPS, audio_packets, decode_times, side_by_side, synthetic_video

from stream_fer.errors import StreamFerError
from stream_fer.frames import Frame, FrameResult
from stream_fer.pipeline import Stage, run_pipeline, run_stages
from stream_fer.records import ROW_FIELDS, to_row
from stream_fer.sinks import CsvSink, JsonlSink, VideoSink
from stream_fer.sources import FileSource, LatestFrames, Source, SourceState, VideoInfo


class ListSink:
    def __init__(self) -> None:
        self.items: list = []
        self.closed = False

    def write(self, frame, result, annotated) -> None:
        self.items.append((frame.index, result, annotated))

    def close(self) -> None:
        self.closed = True


class ListSource(Source):
    """n tiny frames; optionally raises after `fail_after` frames; optionally live with drop-oldest."""

    def __init__(self, n: int, fail_after: int | None = None, live: bool = False, period: float = 0.0):
        super().__init__()
        self.n, self.fail_after, self.live, self.period = n, fail_after, live, period
        self.closed = False

    def open(self) -> VideoInfo:
        self.info = VideoInfo(8, 8, 30.0, None, None if self.live else self.n, "test", self.live)
        return self.info

    def __iter__(self) -> Iterator[Frame]:
        if not self.live:
            for i in range(self.n):
                if self._stop.is_set():
                    return
                if self.fail_after is not None and i == self.fail_after:
                    raise StreamFerError("the source broke")
                yield Frame(i, i / 30, time.monotonic(), np.full((8, 8, 3), i % 256, np.uint8))
            return
        buf = LatestFrames(2)

        def produce():
            for i in range(self.n):
                buf.put(Frame(i, i / 30, time.monotonic(), np.zeros((8, 8, 3), np.uint8)))
                time.sleep(self.period)
            buf.close()

        threading.Thread(target=produce, daemon=True).start()
        self._buf = buf
        while (frame := buf.get(0.5)) is not None:
            yield frame

    @property
    def dropped(self) -> int:
        buf = getattr(self, "_buf", None)
        return buf.dropped if buf else 0

    @dropped.setter
    def dropped(self, value) -> None:
        pass

    def close(self) -> None:
        super().close()
        self.closed = True


def _trivial_stages(delay: float = 0.0, fail_at: int | None = None, fail_stage: str = "classify"):
    def make(name):
        def fn(frame, value):
            if delay:
                time.sleep(delay * (1 + (frame.index * 7919 % 3)))  # uneven, so stages overtake if they could
            if fail_at is not None and name == fail_stage and frame.index == fail_at:
                raise ValueError(f"{name} failed on frame {frame.index}")
            return (value or ()) + (name,)
        return Stage(name, fn)

    stages = [make(n) for n in ("landmarks", "classify", "track")]
    stages.append(Stage("render", lambda frame, value: (FrameResult(frame.index, frame.timestamp, ()), frame.rgb)))
    return stages


def _pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pipeline-")]


def test_files_leave_in_order_and_complete():
    sink = ListSink()
    source = ListSource(60)
    source.open()
    stats = run_stages(source, _trivial_stages(delay=0.0005), [sink])
    assert [i for i, _, _ in sink.items] == list(range(60))
    assert stats.frames_in == stats.frames_out == 60 and stats.dropped == 0
    assert [s.name for s in stats.stages] == ["landmarks", "classify", "track", "render", "write"]
    assert all(s.frames == 60 for s in stats.stages)
    assert stats.latency_median_ms is not None and stats.latency_p95_ms >= stats.latency_median_ms
    assert sink.closed and source.closed
    assert any("fps" in line for line in stats.summary_lines())


def test_an_error_in_any_stage_reaches_the_caller_and_stops_every_thread():
    sink = ListSink()
    source = ListSource(500)
    source.open()
    with pytest.raises(ValueError, match="classify failed on frame 7"):
        run_stages(source, _trivial_stages(fail_at=7), [sink])
    assert sink.closed and source.closed
    assert len(sink.items) < 500
    time.sleep(0.3)
    assert not _pipeline_threads()


def test_a_sink_error_reaches_the_caller():
    class Broken(ListSink):
        def write(self, frame, result, annotated):
            if frame.index == 3:
                raise StreamFerError("disk full")

    source = ListSource(50)
    source.open()
    sink = Broken()
    with pytest.raises(StreamFerError, match="disk full"):
        run_stages(source, _trivial_stages(), [sink])
    assert sink.closed


def test_a_source_error_lets_the_frames_read_finish_first():
    sink = ListSink()
    source = ListSource(50, fail_after=20)
    source.open()
    with pytest.raises(StreamFerError, match="the source broke"):
        run_stages(source, _trivial_stages(delay=0.001), [sink])
    assert [i for i, _, _ in sink.items] == list(range(20))
    assert sink.closed


def test_ctrl_c_drains_the_frames_in_flight_and_closes():
    sink = ListSink()
    source = ListSource(10_000)
    source.open()

    def interrupt(frame, value):
        if frame.index == 30:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        return value

    stages = [Stage("landmarks", interrupt), *_trivial_stages(delay=0.001)[1:]]
    stats = run_stages(source, stages, [sink])
    assert stats.interrupted
    assert 30 < stats.frames_out < 10_000
    assert [i for i, _, _ in sink.items] == list(range(stats.frames_out))  # in order, no gap
    assert stats.frames_out == stats.frames_in  # everything read was written
    assert sink.closed and source.closed


def test_max_frames():
    sink = ListSink()
    source = ListSource(100)
    source.open()
    stats = run_stages(source, _trivial_stages(), [sink], max_frames=10)
    assert stats.frames_out == 10


def test_a_live_source_drops_instead_of_queueing():
    sink = ListSink()
    source = ListSource(150, live=True, period=0.002)
    source.open()
    stats = run_stages(source, _trivial_stages(delay=0.005), [sink])
    assert stats.dropped > 0
    assert stats.frames_out + stats.dropped == 150
    assert any("dropped" in line for line in stats.summary_lines())


# ---------------------------------------------------------------------------- with the real analysis


def _analyzer(landmarker_model, max_faces=1):
    from stream_fer.analyzer import FrameAnalyzer

    return FrameAnalyzer(FakeEngine(), landmarker_path=landmarker_model, max_faces=max_faces)


def _run_file(path, out_dir, landmarker_model, max_faces=1, max_frames=None):
    source = FileSource(path)
    info = source.open()
    video, rows = out_dir / "out.mp4", out_dir / "rows.csv"
    sinks = [VideoSink(video, info, preset="ultrafast"), CsvSink(rows, ROW_FIELDS, to_row),
             JsonlSink(out_dir / "rows.jsonl", to_row)]
    with _analyzer(landmarker_model, max_faces) as analyzer:
        stats = run_pipeline(source, analyzer, sinks, progress=False, max_frames=max_frames)
    with open(rows) as f:
        table = list(csv.DictReader(f))
    return stats, video, table


@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov", "no_face.mp4"])
def test_real_clips_keep_every_frame_with_its_timing(clips, tmp_path, landmarker_model, name):
    src = clips[name]
    stats, video, table = _run_file(src, tmp_path, landmarker_model)
    n = CLIPS[name]
    assert stats.frames_in == stats.frames_out == n
    assert decode_times(video) == pytest.approx(decode_times(src), abs=1e-6)
    assert audio_packets(video) == audio_packets(src)
    assert [int(r["frame_index"]) for r in table] == list(range(n))  # max_faces=1: one row per frame
    with_face = sum(int(r["num_faces"]) > 0 for r in table)
    assert with_face == stats.frames_with_faces
    if name == "no_face.mp4":
        assert with_face == 0 and all(r["label"] == "" and r["track_id"] == "" for r in table)
    if name == "single_face.mp4":
        assert with_face == n and {r["track_id"] for r in table} == {"1"}
    if name == "face_noface.mov":
        assert 0 < with_face < n


def test_two_faces_get_two_stable_track_ids(clips, shared_dir, tmp_path, landmarker_model):
    other = shared_dir / "videos" / "WolfgangLanger_Pexels.mp4"
    if not other.is_file():
        pytest.skip(f"{other} not found")
    two = side_by_side(other, clips["single_face.mp4"], tmp_path / "two.mp4", max_frames=45)
    stats, video, table = _run_file(two, tmp_path, landmarker_model, max_faces=2)
    assert stats.frames_out == 45 and len(decode_times(video)) == 45
    by_frame: dict[int, dict[str, str]] = {}
    for r in table:
        assert r["num_faces"] == "2", f"frame {r['frame_index']}: {r['num_faces']} faces"
        side = "left" if float(r["box_x1"]) < 640 else "right"
        by_frame.setdefault(int(r["frame_index"]), {})[side] = r["track_id"]
    assert len(by_frame) == 45
    left = {ids["left"] for ids in by_frame.values()}
    right = {ids["right"] for ids in by_frame.values()}
    assert len(left) == 1 and len(right) == 1 and left != right


def test_pipeline_on_a_short_synthetic_clip_without_faces(tmp_path, landmarker_model):
    src = synthetic_video(tmp_path / "bars.mp4", frames=12)
    stats, video, table = _run_file(src, tmp_path, landmarker_model)
    assert stats.frames_out == 12 and stats.faces == 0
    assert len(table) == 12 and decode_times(video) == pytest.approx(decode_times(src))


def test_source_state_after_a_run(clips, landmarker_model):
    source = FileSource(clips["single_face.mp4"])
    source.open()
    with _analyzer(landmarker_model) as analyzer:
        run_pipeline(source, analyzer, [ListSink()], progress=False, max_frames=5)
    assert source.state is SourceState.STOPPED


def test_rows_only_skip_the_render_stage_and_keep_every_value(clips, tmp_path, landmarker_model):
    """With only row sinks nothing is drawn (no render stage, no picture handed to the sinks), and the rows
    are the ones a run with a picture output writes."""
    path = clips["single_face.mp4"]

    def rows(sinks):
        source = FileSource(path)
        info = source.open()
        collected = ListSink()
        collected.wants_annotated = False  # as the row sinks say
        with _analyzer(landmarker_model) as analyzer:
            stats = run_pipeline(source, analyzer, [collected, *sinks(info)], progress=False, max_frames=12)
        return stats, collected

    data_only, rows_only = rows(lambda info: [CsvSink(tmp_path / "a.csv", ROW_FIELDS, to_row)])
    assert "render" not in [s.name for s in data_only.stages]
    assert all(annotated is None for _, _, annotated in rows_only.items)
    with_video, full = rows(lambda info: [VideoSink(tmp_path / "a.mp4", info, preset="ultrafast")])
    assert "render" in [s.name for s in with_video.stages]
    assert all(annotated is not None for _, _, annotated in full.items)
    assert [to_row(r) for _, r, _ in rows_only.items] == [to_row(r) for _, r, _ in full.items]


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize("runner", ["threaded", "sequential"])
def test_numpys_blas_runs_single_threaded_while_the_pipeline_runs_and_is_restored_after(runner):
    # OpenBLAS's idle workers spin after every small matrix product; the stages already use the cores
    from threadpoolctl import threadpool_limits

    from stream_fer.pipeline import RUNNERS

    seen = []

    def note(frame, value):
        np.ones((64, 64)) @ np.ones((64, 64))  # a real BLAS call from the stage's thread
        seen.append(_blas_threads())
        return value

    assert _blas_threads(), "numpy's wheel bundles OpenBLAS; threadpoolctl should see it"
    with threadpool_limits(limits=2, user_api="blas"):
        source = ListSource(12)
        source.open()
        RUNNERS[runner](source, [Stage("landmarks", note), *_trivial_stages()[1:]], [ListSink()])
        assert seen and all(threads == [1] * len(threads) for threads in seen)
        assert _blas_threads() == [2] * len(_blas_threads())
