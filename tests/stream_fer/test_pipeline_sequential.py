"""The sequential runner (stream_fer.pipeline.run_sequential) keeps the threaded runner's contract in the
caller's thread: order and completeness, per-stage statistics, errors from a stage, a sink or the source,
Ctrl-C (the first finishes the frame in hand, a second abandons it), max_frames; then the real analysis
(MediaPipe + a stand-in engine) on a real clip writes the same rows and video as the threaded runner."""

from __future__ import annotations

import _thread
import csv
import threading

import pytest
from fake_engine import FakeEngine
from media import decode_times
from test_pipeline import ListSink, ListSource, _trivial_stages

from stream_fer.errors import StreamFerError
from stream_fer.pipeline import RUNNERS, Stage, check_pipeline, run_pipeline, run_sequential
from stream_fer.records import ROW_FIELDS, to_row
from stream_fer.sinks import CsvSink, VideoSink
from stream_fer.sources import FileSource


def _opened(n: int, **kwargs) -> ListSource:
    source = ListSource(n, **kwargs)
    source.open()
    return source


def test_every_frame_in_order_with_the_same_statistics_in_the_callers_thread():
    seen_threads = set()

    def note(frame, value):
        seen_threads.add(threading.current_thread())
        return value

    sink, source = ListSink(), _opened(60)
    before = set(threading.enumerate())
    stats = run_sequential(source, [Stage("landmarks", note), *_trivial_stages()[1:]], [sink])
    assert seen_threads == {threading.current_thread()}
    assert set(threading.enumerate()) <= before  # no thread of its own
    assert [i for i, _, _ in sink.items] == list(range(60))
    assert stats.frames_in == stats.frames_out == 60 and stats.dropped == 0 and not stats.interrupted
    assert [s.name for s in stats.stages] == ["landmarks", "classify", "track", "render", "write"]
    assert all(s.frames == 60 for s in stats.stages) and stats.extra["read"].frames == 60
    assert stats.wall_s > 0 and stats.latency_p95_ms >= stats.latency_median_ms
    assert sink.closed and source.closed
    assert any("fps" in line for line in stats.summary_lines())


def test_a_stage_error_reaches_the_caller_after_closing_everything():
    sink, source = ListSink(), _opened(500)
    with pytest.raises(ValueError, match="classify failed on frame 7"):
        run_sequential(source, _trivial_stages(fail_at=7), [sink])
    assert [i for i, _, _ in sink.items] == list(range(7))
    assert sink.closed and source.closed


def test_a_sink_error_reaches_the_caller():
    class Broken(ListSink):
        def write(self, frame, result, annotated):
            if frame.index == 3:
                raise StreamFerError("disk full")
            super().write(frame, result, annotated)

    sink, source = Broken(), _opened(50)
    with pytest.raises(StreamFerError, match="disk full"):
        run_sequential(source, _trivial_stages(), [sink])
    assert sink.closed and source.closed and len(sink.items) == 3


def test_a_source_error_comes_after_the_frames_read_before_it_are_written():
    sink = ListSink()
    with pytest.raises(StreamFerError, match="the source broke"):
        run_sequential(_opened(50, fail_after=20), _trivial_stages(), [sink])
    assert [i for i, _, _ in sink.items] == list(range(20))
    assert sink.closed


def _interrupting(at: int, times: int) -> Stage:
    def fn(frame, value):
        if frame.index == at:
            for _ in range(times):
                _thread.interrupt_main()  # what Ctrl-C does: SIGINT handled in the main thread
                threading.Event().wait(0.01)  # the handler runs between bytecodes, before this returns
        return value
    return Stage("landmarks", fn)


def test_ctrl_c_finishes_the_frame_in_hand_and_closes_the_outputs():
    sink, source = ListSink(), _opened(10_000)
    stats = run_sequential(source, [_interrupting(30, 1), *_trivial_stages()[1:]], [sink])
    assert stats.interrupted
    assert stats.frames_out == stats.frames_in == 31  # frame 30 was in hand: it is written, none after it
    assert [i for i, _, _ in sink.items] == list(range(31))
    assert sink.closed and source.closed


def test_a_second_ctrl_c_abandons_the_frame_in_hand():
    sink, source = ListSink(), _opened(10_000)
    stats = run_sequential(source, [_interrupting(30, 2), *_trivial_stages()[1:]], [sink])
    assert stats.interrupted and stats.frames_in == 31 and stats.frames_out == 30
    assert [i for i, _, _ in sink.items] == list(range(30))
    assert sink.closed and source.closed


def test_max_frames():
    sink = ListSink()
    stats = run_sequential(_opened(100), _trivial_stages(), [sink], max_frames=10)
    assert stats.frames_in == stats.frames_out == 10 and len(sink.items) == 10


def test_the_runners_are_chosen_by_name():
    assert check_pipeline("sequential") is run_sequential and set(RUNNERS) == {"threaded", "sequential"}
    with pytest.raises(StreamFerError, match="pipeline must be one of 'threaded', 'sequential', not 'fast'"):
        check_pipeline("fast")


def test_analyze_rejects_an_unknown_pipeline_before_any_work(tmp_path):
    import stream_fer

    with pytest.raises(StreamFerError, match="pipeline must be one of"):
        stream_fer.analyze(tmp_path / "missing.mp4", csv=tmp_path / "a.csv", pipeline="parallel")


def test_the_real_analysis_writes_what_the_threaded_runner_writes(clips, tmp_path, landmarker_model):
    """MediaPipe (its VIDEO-mode tracking is stateful), tracking, smoothing and the video sink: the same rows
    and the same frame timing from either runner."""
    from stream_fer.analyzer import FrameAnalyzer

    path = clips["single_face.mp4"]

    def run(pipeline: str):
        source = FileSource(path, threads=pipeline == "threaded")
        info = source.open()
        out = tmp_path / pipeline
        out.mkdir()
        sinks = [VideoSink(out / "a.mp4", info, preset="ultrafast"), CsvSink(out / "a.csv", ROW_FIELDS, to_row)]
        with FrameAnalyzer(FakeEngine(), landmarker_path=landmarker_model) as analyzer:
            stats = run_pipeline(source, analyzer, sinks, progress=False, max_frames=30, pipeline=pipeline)
        with open(out / "a.csv") as f:
            return stats, list(csv.DictReader(f)), decode_times(out / "a.mp4")

    threaded, sequential = run("threaded"), run("sequential")
    assert sequential[0].frames_out == 30 and [s.name for s in sequential[0].stages] == \
        [s.name for s in threaded[0].stages] == ["landmarks", "classify", "track", "render", "write"]
    assert len(sequential[1]) == 30 and all(r["num_faces"] == "1" for r in sequential[1])
    assert sequential[1] == threaded[1]
    assert sequential[2] == threaded[2]
