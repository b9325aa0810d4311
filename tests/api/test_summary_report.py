"""The summary's numbers checked by hand (a table written out row by row, and the shipped sample clip counted
frame by frame), the low-trust stretches on the timeline, and the HTML report: written by analyze(report=)
and by `stream-fer report`, self-contained, and rendered by headless Chromium (screenshot looked at by a
person; STREAM_FER_UPDATE_DOCS=1 copies it to docs/report_screenshot.png for the README)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stream_fer
from stream_fer.records import ROW_FIELDS
from stream_fer.results import rows_to_table, table_to_pandas
from stream_fer.summary import LOW_TRUST_COSINE, LOW_TRUST_SCORE, summarize

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "docs" / "report_screenshot.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FRAMES = 96  # the whole sample (4 s): the hand at the mouth (neutral), then a smile and a laugh


def _row(frame: int, t: float, track: int | None, label: str | None = None, cos: float | None = None,
         conf: float = 0.8, faces: int = 1) -> dict:
    row = dict.fromkeys(ROW_FIELDS)
    row.update(frame_index=frame, timestamp=t, num_faces=faces if track is not None else 0)
    if track is not None:
        row.update(track_id=track, label=label, raw_label=label, confidence=conf, att_au_cosine=cos,
                   box_x0=10.0, box_y0=10.0, box_x1=60.0, box_y1=60.0, **{f"p_{label}": conf})
    return row


def test_summary_numbers_by_hand():
    # 10 fps; track 1 in frames 0-5, none in frame 6, track 2 in frames 7-8 (frame 8 with both tracks)
    rows = [_row(0, 0.0, 1, "neutral"), _row(1, 0.1, 1, "neutral"), _row(2, 0.2, 1, "happiness", 0.9, 0.6),
            _row(3, 0.3, 1, "happiness", 0.65, 0.9), _row(4, 0.4, 1, "happiness", 0.8, 1.0),
            _row(5, 0.5, 1, "neutral", conf=0.7), _row(6, 0.6, None), _row(7, 0.7, 2, "sadness", 0.5),
            _row(8, 0.8, 2, "sadness", 0.95, faces=2), _row(8, 0.8, 1, "neutral", faces=2)]
    table = summarize(table_to_pandas(rows_to_table(rows)))
    everyone, one, two = (table.iloc[i] for i in range(3))
    assert table["track"].tolist()[1:] == [1, 2] and table["track"].isna().tolist() == [True, False, False]
    # track 1: 7 frames of 0.1 s; labels n n h h h n . . n -> 3 x happiness, 4 x neutral; switches n>h, h>n
    assert one["frames"] == 7 and one["duration_s"] == pytest.approx(0.7)
    assert one["start_s"] == 0.0 and one["end_s"] == pytest.approx(0.8)
    assert one["share_happiness"] == pytest.approx(3 / 7) and one["share_neutral"] == pytest.approx(4 / 7)
    assert one["share_sadness"] == 0.0
    assert one["switches_per_min"] == pytest.approx(2 / (0.7 / 60))
    assert one["mean_confidence"] == pytest.approx((0.8 * 2 + 0.6 + 0.9 + 1.0 + 0.7 + 0.8) / 7, abs=1e-6)
    assert one["att_au_cosine_mean"] == pytest.approx((0.9 + 0.65 + 0.8) / 3, abs=1e-6)
    assert one["low_trust_share"] == pytest.approx(1 / 3)  # 0.65 < 0.7
    # track 2: two frames of sadness, cosines 0.5 (low) and 0.95
    assert two["frames"] == 2 and two["share_sadness"] == 1.0 and two["switches_per_min"] == 0.0
    assert two["low_trust_share"] == 0.5 and two["att_au_cosine_mean"] == pytest.approx(0.725, abs=1e-6)
    # all faces: 9 face-rows, 0.9 s of face-time, 2 switches, 2 of 5 cosines low
    assert everyone["frames"] == 9 and everyone["duration_s"] == pytest.approx(0.9)
    assert everyone["share_neutral"] == pytest.approx(4 / 9) and everyone["share_sadness"] == pytest.approx(2 / 9)
    assert everyone["switches_per_min"] == pytest.approx(2 / (0.9 / 60))
    assert everyone["low_trust_share"] == pytest.approx(2 / 5)
    video = table.attrs["video"]
    assert video["frames"] == 9 and video["frames_with_faces"] == 8 and video["tracks"] == 2
    assert video["duration_s"] == pytest.approx(0.9) and LOW_TRUST_COSINE == 0.7
    assert one["low_cosine_share"] == one["low_trust_share"]  # no trust score in these rows: the cosine rule
    assert video["low_trust_rule"] == "attention-AU cosine < 0.7"


def test_the_trust_score_sets_low_trust_where_the_results_have_it():
    rows = [_row(i, i / 10, 1, "happiness", 0.9) for i in range(4)]
    df = table_to_pandas(rows_to_table(rows))
    df["trust"] = [0.9, 0.4, 0.45, 0.8]  # two of four below 0.5, while every cosine is high
    one = summarize(df).iloc[1]
    assert one["low_trust_share"] == 0.5 and one["low_cosine_share"] == 0.0
    assert one["trust_mean"] == pytest.approx(0.6375)


def test_summary_uses_each_frames_own_duration():
    # a variable frame rate: frames shown 0.1, 0.3, 0.1 s and the last one typical period (0.1 s)
    rows = [_row(0, 0.0, 1, "happiness", 0.9), _row(1, 0.1, 1, "happiness", 0.9), _row(2, 0.4, 1, "sadness", 0.9),
            _row(3, 0.5, 1, "sadness", 0.9)]
    one = summarize(table_to_pandas(rows_to_table(rows))).iloc[1]
    assert one["duration_s"] == pytest.approx(0.1 + 0.3 + 0.1 + 0.1)
    assert one["share_happiness"] == pytest.approx(0.4 / 0.6)


def test_a_trust_column_is_summarised_when_present():
    rows = [_row(0, 0.0, 1, "happiness", 0.9), _row(1, 0.1, 1, "happiness", 0.9)]
    df = table_to_pandas(rows_to_table(rows))
    df["trust"] = [0.2, 0.6]
    assert summarize(df).iloc[1]["trust_mean"] == pytest.approx(0.4)
    assert "trust_mean" not in summarize(df.drop(columns="trust")).columns


def test_low_trust_stretches_are_shaded_on_the_timeline():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from stream_fer.report import draw_timeline

    cos = [0.9, 0.5, 0.6, 0.9, 0.9, 0.3, 0.9, None, 0.2]  # low: frames 1-2, 5, 8 -> three stretches
    labels = ["happiness"] * 7 + ["neutral", "happiness"]
    rows = [_row(i, i / 10, 1, labels[i], cos[i]) for i in range(9)]
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    assert draw_timeline(ax, table_to_pandas(rows_to_table(rows))) == 1
    spans = [p for p in ax.patches]
    assert len(spans) == 3
    starts = sorted(round(p.get_x(), 3) for p in spans)
    assert starts == [0.05, 0.45, 0.75]
    assert "trust" not in [line.get_label() for line in ax.lines]
    df = table_to_pandas(rows_to_table(rows))
    df["trust"] = np.linspace(0.2, 0.9, len(df))  # a later trust score is drawn when the results have one
    ax = fig.add_subplot()
    draw_timeline(ax, df)
    assert "trust" in [line.get_label() for line in ax.lines]
    assert len(ax.patches) == 1 and round(ax.patches[0].get_x(), 3) == -0.05  # trust < 0.5: frames 0-3


@pytest.fixture(scope="module")
def reported(sample_video, landmarker_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    paths = {"parquet": folder / "rows.parquet", "report": folder / "report.html"}
    res = stream_fer.analyze(sample_video, **paths, max_frames=FRAMES, backend="onnxruntime",
                             landmarker=landmarker_model)
    return res, paths


def test_summary_of_the_sample_counted_by_hand(reported):
    res, _ = reported
    df = res.to_pandas()
    table = res.summary()
    assert len(table) == 2  # all faces, and the one track
    one = table.iloc[1]
    period = 1001 / 24000  # the sample is 23.976 fps, constant
    labels = df["label"].tolist()
    assert one["frames"] == FRAMES and one["duration_s"] == pytest.approx(FRAMES * period, abs=1e-4)
    for name in ("neutral", "happiness"):
        assert one[f"share_{name}"] == pytest.approx(labels.count(name) / FRAMES, abs=1e-5)
    switches = sum(a != b for a, b in zip(labels, labels[1:]))
    assert switches >= 1  # the hand leaves the mouth and she smiles
    assert one["switches_per_min"] == pytest.approx(switches / (FRAMES * period / 60), rel=1e-4)
    cosines = [c for c in df["att_au_cosine"].tolist() if not np.isnan(c)]
    assert one["att_au_cosine_mean"] == pytest.approx(sum(cosines) / len(cosines), abs=1e-6)
    assert one["low_cosine_share"] == pytest.approx(sum(c < LOW_TRUST_COSINE for c in cosines) / len(cosines))
    trust = df["trust"].astype(float)  # the sample's results carry the trust score: it sets "low trust"
    assert trust.notna().all() and one["trust_mean"] == pytest.approx(trust.mean(), abs=1e-6)
    assert one["low_trust_share"] == pytest.approx(float((trust < LOW_TRUST_SCORE).mean()))
    assert table.attrs["video"]["low_trust_rule"] == "trust score < 0.5"
    assert one["mean_confidence"] == pytest.approx(df["confidence"].astype(float).mean(), abs=1e-6)


def _data_only(html: str) -> None:
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<link" not in html


def test_analyze_writes_a_self_contained_report_with_key_frames(reported):
    res, paths = reported
    html = paths["report"].read_text()
    _data_only(html)
    assert html.count("data:image/png;base64,") >= 2 + 2 * 2  # timeline, shares, two key frames (face, panel)
    assert "Track 1" in html and "Key frames" in html and "No key frames" not in html


def test_cli_summary_and_report_of_a_results_file(cli, reported, sample_video, landmarker_model, tmp_path):
    res, paths = reported
    result = cli("summary", paths["parquet"], "--out", tmp_path / "summary.csv")
    assert result.returncode == 0, result.stderr
    assert "track 1:" in result.stdout and "low trust" in result.stdout
    written = pd.read_csv(tmp_path / "summary.csv")
    assert written["frames"].tolist() == [FRAMES, FRAMES]
    charts_only = cli("report", paths["parquet"], "--out", tmp_path / "charts.html")
    assert charts_only.returncode == 0, charts_only.stderr
    assert "No key frames: give --video" in (tmp_path / "charts.html").read_text()
    env = {"STREAM_FER_LANDMARKER": str(landmarker_model)}
    full = cli("report", paths["parquet"], "--out", tmp_path / "full.html", "--video", sample_video, env=env)
    assert full.returncode == 0, full.stderr
    html = (tmp_path / "full.html").read_text()
    _data_only(html)
    assert "Key frames" in html and html.count("data:image/png;base64,") >= 6
    bad = cli("report", paths["parquet"], "--out", tmp_path / "x.pdf")
    assert bad.returncode == 2 and bad.stderr.startswith("stream-fer: error: ") and "Traceback" not in bad.stderr


def test_the_report_renders_in_chromium(reported, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    _, paths = reported
    requests: list[str] = []
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(paths["report"].as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            heading = page.locator("h2", has_text="Track 1").inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert heading.startswith("Track 1")
    assert len(sizes) >= 6 and all(done and width > 50 for done, width in sizes)
    assert all(u.startswith(("file://", "data:")) for u in requests), requests  # nothing from the network
    assert shot.stat().st_size > 50_000
    if os.environ.get("STREAM_FER_UPDATE_DOCS"):  # refresh the README's picture on purpose, never by default
        shutil.copyfile(shot, SCREENSHOT)


def test_stream_fer_run_writes_parquet_and_a_report(cli, sample_video, landmarker_model, tmp_path):
    rows, report = tmp_path / "rows.parquet", tmp_path / "report.html"
    result = cli(sample_video, "--parquet", rows, "--report", report, "--max-frames", "12", "--backend",
                 "onnxruntime", env={"STREAM_FER_LANDMARKER": str(landmarker_model)})
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stdout
    df = stream_fer.read_results(rows)
    assert df["frame_index"].tolist() == list(range(12))
    assert df.attrs["stream_fer"]["settings"]["max_frames"] == 12
    html = report.read_text()
    _data_only(html)
    assert "Key frames" in html
