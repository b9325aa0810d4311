"""The HTML report of a run: one self-contained file (images inlined as base64 PNG, no script, no CDN) that
a person would rather look at than read.

    header      the source, when and how it was analysed (stream-fer version, model hash, settings)
    summary     the video in one line and the summary table (stream_fer.summary)
    per track   a timeline of the smoothed probabilities with the low-trust stretches shaded, the share of
                time per expression, and key frames: the most confident frame of each expression the track
                showed, as the face with its overlay beside its explanation panel (stream_fer.render)

Key frames need the pictures: analyze(report=...) keeps them while it runs (KeyFrames: per track and
expression the best face so far, cropped around the face); `stream-fer report F --video IN` re-analyses
the chosen frames of the video; without a video the report has charts only and says so.

Charts are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot state: safe in threads,
and it never changes a notebook's backend); `plot_timeline` uses pyplot for notebook users.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stream_fer.errors import StreamFerError
from stream_fer.face.classes import CLASS_NAMES
from stream_fer.frames import FaceResult, Frame, FrameResult
from stream_fer.summary import (
    LOW_TRUST_COSINE,
    format_summary,
    frame_period,
    has_trust_score,
    low_trust,
    low_trust_rule,
    summarize,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MAX_TRACKS = 6  # tracks shown in full (the longest); the summary table lists them all
LOW_TRUST_COLOUR = "#d62728"


def _class_colour(name: str) -> tuple[float, float, float]:
    from stream_fer.render import CLASS_COLOURS

    r, g, b = CLASS_COLOURS.get(name, (128, 128, 128))
    return r / 255.0, g / 255.0, b / 255.0


# ------------------------------------------------------------------------------------------ key frames


@dataclass(frozen=True)
class KeyFrame:
    """The most confident face of one expression of one track: the picture around it and its result, both
    in the coordinates of that picture."""

    track_id: int
    label: str
    confidence: float
    frame_index: int
    timestamp: float
    patch: np.ndarray  # RGB, the face and the footprint of its aligned crop
    face: FaceResult  # shifted into patch coordinates


def crop_around(rgb: np.ndarray, face: FaceResult, crop_size: int, margin: float = 0.35
                ) -> tuple[np.ndarray, FaceResult]:
    """The part of the frame around a face (its box grown by `margin`, and everything its aligned crop reads)
    and the face result moved into that part's coordinates (box, landmarks, alignment)."""
    from stream_fer.align import frame_roi

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = face.box
    pad = margin * max(x1 - x0, y1 - y0)
    bx = [int(np.floor(x0 - pad)), int(np.floor(y0 - pad)), int(np.ceil(x1 + pad)), int(np.ceil(y1 + pad))]
    roi = frame_roi(face.align_matrix, crop_size, rgb.shape, margin=3)
    if roi is not None:
        bx = [min(bx[0], roi[0]), min(bx[1], roi[1]), max(bx[2], roi[2]), max(bx[3], roi[3])]
    ox, oy = max(0, bx[0]), max(0, bx[1])
    ex, ey = min(w, bx[2]), min(h, bx[3])
    patch = np.ascontiguousarray(rgb[oy:ey, ox:ex])
    matrix = np.asarray(face.align_matrix, dtype=np.float64).copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([ox, oy], dtype=np.float64)
    landmarks = np.asarray(face.landmarks, dtype=np.float64).copy()
    landmarks[:, 0] -= ox
    landmarks[:, 1] -= oy
    box = (face.box[0] - ox, face.box[1] - oy, face.box[2] - ox, face.box[3] - oy)
    return patch, dataclasses.replace(face, box=box, landmarks=landmarks, align_matrix=matrix)


class KeyFrames:
    """While a run goes: per (track, smoothed label) the face with the highest smoothed confidence, kept as
    a crop of its frame (a few hundred kB per expression and track, whatever the video's length)."""

    def __init__(self, crop_size: int = 48) -> None:
        self.crop_size = crop_size
        self.best: dict[tuple[int, str], KeyFrame] = {}

    def offer(self, frame: Frame, result: FrameResult) -> None:
        for face in result.faces:
            key = (face.track_id, face.label)
            current = self.best.get(key)
            confidence = face.confidence
            if current is None or confidence > current.confidence:
                patch, moved = crop_around(frame.rgb, face, self.crop_size)
                self.best[key] = KeyFrame(face.track_id, face.label, confidence, result.frame_index,
                                          result.timestamp, patch, moved)

    def for_track(self, track_id: int) -> list[KeyFrame]:
        return [k for (t, _), k in self.best.items() if t == track_id]


def keyframes_from_video(df: pd.DataFrame, video: str | os.PathLike, tracks: list[int], model=None,
                         landmarker=None, class_names: tuple[str, ...] = CLASS_NAMES) -> KeyFrames:
    """Key frames for a results table made earlier: the most confident row of each (track, label) is found
    in the video and analysed again as a still (the attention and AU maps are the model's; the label,
    probabilities and cosine shown are the results file's, which were smoothed over time)."""
    from stream_fer.api import Analyzer
    from stream_fer.sources import open_source

    faces = df[df["track_id"].notna() & df["track_id"].isin(tracks)]
    if faces.empty:
        return KeyFrames()
    best = faces.loc[faces.groupby(["track_id", "label"], observed=True)["confidence"].idxmax()]
    wanted: dict[int, list] = {}
    for _, row in best.iterrows():
        wanted.setdefault(int(row["frame_index"]), []).append(row)
    keys = KeyFrames()
    last = max(wanted)
    with Analyzer(mode="image", max_faces=int(faces["num_faces"].max()), model=model, landmarker=landmarker) as a:
        keys.crop_size = a.crop_size
        source = open_source(str(video))
        with source:
            for frame in source:
                if frame.index > last:
                    break
                rows = wanted.get(frame.index)
                if not rows:
                    continue
                result = a.process(frame.rgb, timestamp=frame.timestamp)
                a.reset()
                for row in rows:
                    face = _closest_face(result.faces, row)
                    if face is None:
                        log.warning("frame %d: the face of track %s was not found again", frame.index,
                                    row["track_id"])
                        continue
                    probs = np.array([row.get(f"p_{c}", np.nan) for c in class_names], dtype=np.float32)
                    cos = row["att_au_cosine"]
                    face = dataclasses.replace(face, track_id=int(row["track_id"]), label=str(row["label"]),
                                               probs=probs, att_au_cosine=None if cos != cos else float(cos))
                    patch, moved = crop_around(frame.rgb, face, keys.crop_size)
                    keys.best[(face.track_id, face.label)] = KeyFrame(
                        face.track_id, face.label, float(row["confidence"]), frame.index, frame.timestamp, patch,
                        moved)
    return keys


def _closest_face(faces, row) -> FaceResult | None:
    if not faces:
        return None
    cx = (row["box_x0"] + row["box_x1"]) / 2
    cy = (row["box_y0"] + row["box_y1"]) / 2
    size = max(row["box_x1"] - row["box_x0"], 1.0)

    def distance(f: FaceResult) -> float:
        return float(np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))

    face = min(faces, key=distance)
    return face if distance(face) < size else None


# ------------------------------------------------------------------------------------------ charts


def _track_rows(df: pd.DataFrame, track: int | None) -> tuple[pd.DataFrame, int]:
    faces = df[df["track_id"].notna()]
    if faces.empty:
        raise StreamFerError("no faces in these results: nothing to plot")
    if track is None:
        track = int(faces["track_id"].value_counts().idxmax())
    rows = faces[faces["track_id"] == track].sort_values("frame_index")
    if rows.empty:
        raise StreamFerError(f"no track {track} in these results (tracks: "
                             f"{', '.join(str(int(t)) for t in sorted(faces['track_id'].unique()))})")
    return rows, int(track)


def _spans(times: np.ndarray, flags: np.ndarray, frame_index: np.ndarray, period: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of consecutive frames that are flagged."""
    spans: list[tuple[float, float]] = []
    start = None
    for i, flag in enumerate(flags):
        continues = i > 0 and frame_index[i] == frame_index[i - 1] + 1
        if flag and (start is None or not continues):
            if start is not None:
                spans.append((times[start] - period / 2, times[i - 1] + period / 2))
            start = i
        elif not flag and start is not None:
            spans.append((times[start] - period / 2, times[i - 1] + period / 2))
            start = None
    if start is not None:
        spans.append((times[start] - period / 2, times[-1] + period / 2))
    return spans


def draw_timeline(ax, df: pd.DataFrame, track: int | None = None, threshold: float = LOW_TRUST_COSINE,
                  class_names: tuple[str, ...] = CLASS_NAMES, period: float | None = None) -> int:
    """Draw one track's smoothed probabilities over time on `ax`, low-trust stretches shaded; returns the
    track id drawn."""
    rows, track = _track_rows(df, track)
    period = frame_period(df) if period is None else period
    t = rows["timestamp"].to_numpy(dtype=np.float64)
    index = rows["frame_index"].to_numpy()
    gap = np.r_[False, np.diff(index) > 1]  # break the lines where the face was not seen

    def broken(column: str) -> tuple[np.ndarray, np.ndarray]:
        y = rows[column].to_numpy(dtype=np.float64)
        cut = np.flatnonzero(gap)
        return np.insert(t, cut, np.nan), np.insert(y, cut, np.nan)

    for name in class_names:
        if f"p_{name}" in rows.columns:
            ax.plot(*broken(f"p_{name}"), color=_class_colour(name), lw=1.6, label=name)
    if "trust" in rows.columns and rows["trust"].notna().any():  # a trust score, where the results have one
        ax.plot(*broken("trust"), color="black", ls="--", lw=1.0, label="trust")
    low = low_trust(rows, threshold).to_numpy()
    for i, (a, b) in enumerate(_spans(t, low, index, period)):
        ax.axvspan(a, b, color=LOW_TRUST_COLOUR, alpha=0.13, lw=0,
                   label=f"low trust ({low_trust_rule(rows, threshold)})" if i == 0 else None)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(t.min() - period / 2, t.max() + period / 2) if len(t) > 1 else None
    ax.set_xlabel("time (s)")
    ax.set_ylabel("smoothed probability")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    return track


def plot_timeline(df: pd.DataFrame, track: int | None = None, ax=None, threshold: float = LOW_TRUST_COSINE):
    """A matplotlib Figure of one track's timeline (default: the longest track); draws on `ax` if given."""
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 3))
    drawn = draw_timeline(ax, df, track, threshold)
    ax.set_title(f"track {drawn}")
    ax.figure.tight_layout()
    return ax.figure


def _low_trust_note(df: pd.DataFrame, threshold: float) -> str:
    cosine = (f"the attention-to-AU-map cosine is below {threshold:g}: the model looked less at the expression's "
              "action units than 98% of its right answers on FER+ validation faces do (of those faces, 59% were "
              "right, against 87% above it). Neutral has no AU map and no cosine.")
    if not has_trust_score(df):
        return "Low trust: " + cosine
    return ("Low trust: the trust score (the calibrated chance that the label is right, from confidence, the "
            "mirrored face, attention and blendshapes; engines/default/MODEL_CARD.md) is below 0.5. "
            "Low cosine (the 'low cosine' column): " + cosine)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_of_array(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shares_chart(row, class_names) -> str:
    fig = _figure(3.0, 2.4)
    ax = fig.add_subplot()
    names = [c for c in class_names if f"share_{c}" in row]
    values = [float(row[f"share_{c}"]) for c in names]
    ax.barh(names[::-1], values[::-1], color=[_class_colour(c) for c in names[::-1]])
    for y, v in enumerate(values[::-1]):
        ax.text(v + 0.01, y, f"{v:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("share of tracked time")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _timeline_chart(df, track, threshold, class_names, period) -> str:
    fig = _figure(6.7, 2.6)
    ax = fig.add_subplot()
    draw_timeline(ax, df, track, threshold, class_names, period)
    return _png(fig)


def _keyframe_images(key: KeyFrame, crop_size: int, class_names) -> tuple[str, str]:
    from stream_fer.render import OverlayOptions, explanation_panel, render_frame

    thumb = render_frame(key.patch, FrameResult(key.frame_index, key.timestamp, (key.face,)),
                         OverlayOptions(label=False, bars=False, au_regions=False, panel=False), crop_size, class_names)
    panel = explanation_panel(key.patch, key.face, crop_size, tile=150, class_names=class_names)
    return _png_of_array(thumb), _png_of_array(panel)


# ------------------------------------------------------------------------------------------ the page

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2230}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:0 0 10px} h3{font-size:15px;margin:14px 0 6px}
.meta{color:#5b6275;font-size:13px} .note{background:#fff7e0;border:1px solid #f0d58a;padding:8px 12px;
border-radius:6px;font-size:13px;margin:12px 0}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px 20px;margin:18px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%} th,td{padding:4px 7px;text-align:right;
border-bottom:1px solid #e6e8ee;white-space:nowrap} th:first-child,td:first-child{text-align:left}
th{color:#5b6275;font-weight:600} .row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.keys{display:flex;gap:14px;flex-wrap:wrap} figure{margin:0;background:#12141a;border-radius:8px;padding:8px;
color:#e8eaf0;font-size:12px} figure img{display:block} .pair{display:flex;gap:8px;align-items:flex-start}
.pair img.face{max-height:173px;border-radius:4px} img{max-width:100%} .scroll{overflow-x:auto}
"""


_HEADERS = {"start_s": "from s", "end_s": "to s", "duration_s": "tracked s", "mean_confidence": "confidence",
            "switches_per_min": "switches/min", "att_au_cosine_mean": "AU cosine", "low_trust_share": "low trust",
            "low_cosine_share": "low cosine", "trust_mean": "trust"}


def _table_html(table: pd.DataFrame) -> str:
    pct = [c for c in table.columns if c.startswith("share_") or c in ("low_trust_share", "low_cosine_share")]
    head = "".join(f"<th>{html.escape(_HEADERS.get(c, c.replace('share_', '').replace('_', ' ')))}</th>"
                   for c in table.columns)
    body = []
    for _, row in table.iterrows():
        cells = []
        for c in table.columns:
            v = row[c]
            if c == "track":
                text = "all faces" if str(v) == "<NA>" else f"track {v}"
            elif v is None or (isinstance(v, float) and v != v):
                text = "–"
            elif c in pct:
                text = f"{v:.0%}"
            elif c == "frames":
                text = f"{int(v)}"
            elif isinstance(v, (float, np.floating)):
                text = f"{v:.2f}"
            else:
                text = str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</div>")


def build_report(df: pd.DataFrame, metadata: dict | None = None, keyframes: KeyFrames | None = None,
                 title: str = "stream-fer report", class_names: tuple[str, ...] = CLASS_NAMES,
                 threshold: float = LOW_TRUST_COSINE, why_no_keyframes: str | None = None) -> str:
    """The report as one HTML string."""
    metadata = metadata or {}
    fps = (metadata.get("source") or {}).get("fps") or metadata.get("fps")
    table = summarize(df, fps=fps, threshold=threshold, class_names=class_names)
    video = table.attrs["video"]
    period = video["frame_period_s"]
    settings = metadata.get("settings") or {}
    model_hash = str(metadata.get("model_sha256") or "")[:12]
    made = " · ".join(x for x in [
        f"stream-fer {metadata['stream_fer_version']}" if metadata.get("stream_fer_version") else "",
        f"model {model_hash}" if model_hash else "",
        f"engine {(metadata.get('model') or {}).get('engine')}" if (metadata.get("model") or {}).get("engine") else "",
        f"smoothing {settings.get('smoothing')} {settings.get('smoothing_strength')}" if settings else "",
        f"max faces {settings.get('max_faces')}" if settings else "",
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())] if x)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<div class='meta'>{html.escape(made)}</div>"]
    parts.append("<section><h2>Summary</h2><p>" + html.escape(format_summary(table).splitlines()[0]) + "</p>"
                 + _table_html(table) + "<p class='meta'>" + _low_trust_note(df, threshold) + "</p></section>")
    faces = df[df["track_id"].notna()]
    order = faces["track_id"].value_counts().index.tolist() if not faces.empty else []
    shown = [int(t) for t in order[:MAX_TRACKS]]
    if why_no_keyframes:
        parts.append(f"<div class='note'>{html.escape(why_no_keyframes)}</div>")
    if len(order) > MAX_TRACKS:
        parts.append(f"<div class='note'>{len(order)} tracks: the {MAX_TRACKS} longest are shown below; the "
                     "table above has them all.</div>")
    if not shown:
        parts.append("<section><h2>No faces</h2><p>No face was found in any frame.</p></section>")
    by_track = {int(r["track"]): r for _, r in table.iterrows() if str(r["track"]) != "<NA>"}
    for track in shown:
        row = by_track[track]
        head = (f"<h2>Track {track}</h2><div class='meta'>{row['duration_s']:.1f} s tracked, "
                f"{row['start_s']:.1f}–{row['end_s']:.1f} s · confidence {row['mean_confidence']:.2f} · "
                + (f"{row['switches_per_min']:.1f} label switches/min · " if row["switches_per_min"] ==
                   row["switches_per_min"] else "")
                + (f"attention-AU cosine {row['att_au_cosine_mean']:.2f}, low trust "
                   f"{row['low_trust_share']:.0%} of frames with a cosine" if row["att_au_cosine_mean"] ==
                   row["att_au_cosine_mean"] else "no attention-AU cosine (neutral throughout)")
                + "</div>")
        charts = (f"<div class='row'><img alt='timeline of track {track}' src='data:image/png;base64,"
                  f"{_timeline_chart(df, track, threshold, class_names, period)}'>"
                  f"<img alt='expression shares of track {track}' src='data:image/png;base64,"
                  f"{_shares_chart(row, class_names)}'></div>")
        keys_html = ""
        if keyframes is not None:
            keys = sorted(keyframes.for_track(track), key=lambda k: -float(row.get(f"share_{k.label}", 0) or 0))
            figures = []
            for key in keys:
                thumb, panel = _keyframe_images(key, keyframes.crop_size, class_names)
                cos = key.face.att_au_cosine
                caption = (f"<b>{html.escape(key.label)}</b> {key.confidence:.0%} at {key.timestamp:.2f} s "
                           f"(frame {key.frame_index})" + ("" if cos is None else f" · cosine {cos:.2f}"))
                figures.append(f"<figure><div class='pair'><img class='face' alt='face' src='data:image/png;"
                               f"base64,{thumb}'><img alt='explanation' src='data:image/png;base64,{panel}'>"
                               f"</div><figcaption>{caption}</figcaption></figure>")
            if figures:
                keys_html = ("<h3>Key frames: the most confident frame of each expression</h3>"
                             f"<div class='keys'>{''.join(figures)}</div>")
        parts.append(f"<section>{head}{charts}{keys_html}</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body><main>"
            + "".join(parts) + "</main></body></html>")


def require_matplotlib() -> None:
    """One StreamFerError, before any work, where the report's plotting library is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise StreamFerError("the report needs matplotlib: pip install 'stream-fer[report]'") from None


def write_report(path: str | os.PathLike, df: pd.DataFrame, metadata: dict | None = None,
                 keyframes: KeyFrames | None = None, title: str = "stream-fer report",
                 class_names: tuple[str, ...] = CLASS_NAMES, why_no_keyframes: str | None = None) -> Path:
    """Write the report (under a temporary name, renamed into place) and return its path."""
    require_matplotlib()
    p = Path(path)
    if keyframes is None and why_no_keyframes is None:
        why_no_keyframes = "No key frames: these results came without their video."
    text = build_report(df, metadata, keyframes, title, class_names, why_no_keyframes=why_no_keyframes)
    part = p.with_name(f".{p.name}.part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, p)
    except OSError as exc:
        raise StreamFerError(f"cannot write {p}: {exc.strerror or exc}") from None
    log.info("report written to %s (%d kB)", p, len(text) // 1024)
    return p
