"""Per-video and per-track summary of a results table (`Results.summary()`, `stream-fer summary F`).

One row per track, after a first row for all faces of the video together (track <NA>):

    track                  the track id (<NA>: every face of the video)
    frames                 rows (frames) of the track
    start_s, end_s         first and last timestamp of the track
    duration_s             time tracked: the sum of the durations of the frames the track was seen in (a
                           frame lasts until the next one, so variable frame rates count right)
    share_<class>          share of the tracked time whose smoothed label is <class> (sums to 1)
    mean_confidence        mean of the smoothed label's probability
    switches_per_min       changes of the smoothed label between consecutive frames of the track, per
                           minute tracked (the whole-video row: all tracks' switches over all their time)
    att_au_cosine_mean     mean attention-to-AU-map cosine over the frames that have one (neutral has no AU
                           map, so no cosine)
    low_trust_share        share of low-trust frames: where the results have the trust score (`trust`, the
                           calibrated chance that the label is right, stream_fer/trust.py), the faces whose
                           score is below LOW_TRUST_SCORE; in older results without it, the cosine rule below
    low_cosine_share       share of the frames with a cosine whose cosine is below LOW_TRUST_COSINE
    trust_mean             mean trust score, when the results have one

The video itself (frames, duration, share of frames with a face, tracks) is in `summary.attrs["video"]`.

LOW_TRUST_SCORE = 0.5: the trust score estimates the chance that the label is right (its calibration error
on FER+ test is 0.03, engines/default/MODEL_CARD.md), so below 0.5 the label is more likely wrong than right.
It predicts wrong labels far better than the cosine does (AUROC 0.875 against 0.665), so it is the rule
wherever the results carry it; the app uses the same rule.

LOW_TRUST_COSINE = 0.7, from the model's own validation data (benchmarks/low_trust_threshold.py): every
FER+ validation face run through the product path, its run-time cosine taken against the AU map of the
predicted label. With the session-12 model, 98% of right predictions reach 0.72 (their 2nd percentile); of the
faces below 0.7, 59% are right, against 87% above it (2.2% of the expressive predictions fall below; the
previous default: 0.71, 64%, 87%, 2.6%). It is also where the
app's wording changes from "looks where the expression's AUs are" to "partly on the expression's AUs". A
low-trust frame may well be right: the model did not look where it was taught to for that expression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stream_fer.face.classes import CLASS_NAMES

if TYPE_CHECKING:
    import pandas as pd

LOW_TRUST_COSINE = 0.7
LOW_TRUST_SCORE = 0.5
MAX_GAP_PERIODS = 10

SUMMARY_COLUMNS = ("track", "frames", "start_s", "end_s", "duration_s", *(f"share_{c}" for c in CLASS_NAMES),
                   "mean_confidence", "switches_per_min", "att_au_cosine_mean", "low_trust_share",
                   "low_cosine_share")


def frame_period(df: pd.DataFrame, fps: float | None = None) -> float:
    """Seconds per frame: the median step between consecutive frame timestamps, else 1 / fps, else 0."""
    times = np.unique(df["timestamp"].to_numpy(dtype=np.float64))
    steps = np.diff(times)
    steps = steps[steps > 0]
    if len(steps):
        return float(np.median(steps))
    return 1.0 / fps if fps else 0.0


def frame_durations(df: pd.DataFrame, fps: float | None = None) -> pd.Series:
    """Per frame index, how long the frame is shown: until the next frame's timestamp (variable frame rates
    count right), the last frame one typical period; a gap (a stalled live stream) counts at most
    MAX_GAP_PERIODS periods."""
    import pandas as pd

    frames = df.drop_duplicates("frame_index").sort_values("frame_index")
    times = frames["timestamp"].to_numpy(dtype=np.float64)
    period = frame_period(df, fps)
    steps = np.append(np.diff(times), period)
    steps = np.clip(np.where(steps > 0, steps, period), 0.0, MAX_GAP_PERIODS * period)
    return pd.Series(steps, index=frames["frame_index"].to_numpy())


def has_trust_score(df: pd.DataFrame) -> bool:
    """Whether the results carry the trust score (results written before it existed do not)."""
    return "trust" in df.columns and bool(df["trust"].notna().any())


def low_cosine(df: pd.DataFrame, threshold: float = LOW_TRUST_COSINE) -> pd.Series:
    """Per row: True where the attention-to-AU cosine is below the threshold (False where there is none)."""
    cos = df["att_au_cosine"].astype("float64")
    return (cos < threshold).fillna(False).astype(bool)


def low_trust(df: pd.DataFrame, threshold: float = LOW_TRUST_COSINE) -> pd.Series:
    """Per row: True where the trust score is below LOW_TRUST_SCORE; in results without the score, where the
    cosine is below `threshold` (see the module docstring)."""
    if not has_trust_score(df):
        return low_cosine(df, threshold)
    import pandas as pd

    trust = pd.to_numeric(df["trust"], errors="coerce")
    return (trust < LOW_TRUST_SCORE).fillna(False).astype(bool)


def low_trust_rule(df: pd.DataFrame, threshold: float = LOW_TRUST_COSINE) -> str:
    """The rule low_trust() applies to these results, in words."""
    return f"trust score < {LOW_TRUST_SCORE:g}" if has_trust_score(df) else f"attention-AU cosine < {threshold:g}"


def _switches(labels: pd.Series) -> int:
    values = labels.astype("string").fillna("").to_numpy()
    return int((values[1:] != values[:-1]).sum()) if len(values) > 1 else 0


def _stats(faces: pd.DataFrame, durations: np.ndarray, switches: int, class_names, threshold: float,
           track) -> dict:
    import pandas as pd

    n = len(faces)
    duration = float(durations.sum())
    labels = faces["label"].astype("string").fillna("").to_numpy()
    row: dict = {"track": track, "frames": n,
                 "start_s": float(faces["timestamp"].min()) if n else np.nan,
                 "end_s": float(faces["timestamp"].max()) if n else np.nan,
                 "duration_s": duration}
    for c in class_names:
        row[f"share_{c}"] = float(durations[labels == c].sum()) / duration if duration > 0 else np.nan
    row["mean_confidence"] = float(faces["confidence"].astype("float64").mean()) if n else np.nan
    row["switches_per_min"] = switches / (duration / 60.0) if duration > 0 else np.nan
    cos = faces["att_au_cosine"].astype("float64")
    has = cos.notna()
    row["att_au_cosine_mean"] = float(cos[has].mean()) if has.any() else np.nan
    row["low_cosine_share"] = float((cos[has] < threshold).mean()) if has.any() else np.nan
    row["low_trust_share"] = row["low_cosine_share"]
    if "trust" in faces.columns:
        trust = pd.to_numeric(faces["trust"], errors="coerce")
        scored = trust.notna()
        row["trust_mean"] = float(trust.mean()) if scored.any() else np.nan
        if scored.any():
            row["low_trust_share"] = float((trust[scored] < LOW_TRUST_SCORE).mean())
    return row


def summarize(df: pd.DataFrame, fps: float | None = None, threshold: float = LOW_TRUST_COSINE,
              class_names: tuple[str, ...] = CLASS_NAMES) -> pd.DataFrame:
    """The summary table of a results DataFrame (Results.to_pandas() or read_results()); see the module
    docstring for the columns."""
    import pandas as pd

    durations = frame_durations(df, fps)
    faces = df[df["track_id"].notna()].sort_values(["track_id", "frame_index"], kind="stable")
    rows = []
    total_switches = 0
    for track, group in faces.groupby("track_id", sort=True):
        switches = _switches(group["label"])
        total_switches += switches
        rows.append(_stats(group, durations.loc[group["frame_index"]].to_numpy(), switches, class_names,
                           threshold, int(track)))
    everyone = _stats(faces, durations.loc[faces["frame_index"]].to_numpy(), total_switches, class_names,
                      threshold, pd.NA)
    table = pd.DataFrame([everyone, *rows])
    table["track"] = table["track"].astype("Int64")
    table["frames"] = table["frames"].astype("int64")
    frames = int(df["frame_index"].nunique())
    with_faces = int(df.loc[df["num_faces"] > 0, "frame_index"].nunique())
    table.attrs["video"] = {"frames": frames, "duration_s": float(durations.sum()),
                            "frame_period_s": frame_period(df, fps), "frames_with_faces": with_faces,
                            "face_share": with_faces / frames if frames else 0.0, "tracks": len(rows),
                            "low_trust_cosine": threshold, "low_trust_rule": low_trust_rule(df, threshold)}
    return table


def format_summary(table: pd.DataFrame) -> str:
    """The summary as text for a terminal: the video line, then one line per track."""
    video = table.attrs.get("video", {})
    lines = [f"{video.get('frames', 0)} frames, {video.get('duration_s', 0.0):.1f} s, a face in "
             f"{video.get('face_share', 0.0):.0%} of frames, {video.get('tracks', 0)} track(s); low trust = "
             f"{video.get('low_trust_rule', f'attention-AU cosine < {LOW_TRUST_COSINE:g}')}"]
    share_cols = [c for c in table.columns if c.startswith("share_")]
    for _, row in table.iterrows():
        who = "all faces" if row["track"] is None or str(row["track"]) == "<NA>" else f"track {row['track']}"
        if not row["frames"]:
            lines.append(f"{who}: no faces")
            continue
        shares = sorted(((row[c], c[len("share_"):]) for c in share_cols if row[c] > 0), reverse=True)
        top = ", ".join(f"{name} {value:.0%}" for value, name in shares[:4])
        cos = row["att_au_cosine_mean"]
        trust = (f"cosine {cos:.2f}, low trust {row['low_trust_share']:.0%}" if cos == cos else "no AU cosine")
        extra = f", trust {row['trust_mean']:.2f}" if "trust_mean" in table.columns and row["trust_mean"] == \
            row["trust_mean"] else ""
        switches = row["switches_per_min"]
        lines.append(f"{who}: {row['duration_s']:.1f} s ({row['start_s']:.1f}-{row['end_s']:.1f} s); {top}; "
                     f"confidence {row['mean_confidence']:.2f}; "
                     + (f"{switches:.1f} switches/min; " if switches == switches else "")
                     + trust + extra)
    return "\n".join(lines)
