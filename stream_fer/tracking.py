"""Stable track ids for faces across frames.

Each frame's face boxes are matched to the live tracks by an optimal one-to-one assignment (Hungarian
algorithm) on a face-size-relative distance: the distance between box centres divided by the track's
box diagonal, plus a penalty for a change in size. A match farther than `max_distance` is refused, so
a face that appears elsewhere starts a new track. A track that finds no face survives `max_missed`
frames, then ends; its id is never reused.

norfair would do this, but it pins numpy < 2 and rich < 15 (2.3.0); the matcher here is small and
dependency-free (no scipy at run time).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of rows to columns of a (n, m) cost matrix (Hungarian algorithm
    with potentials, O(n^2 m)); returns (rows, cols) like scipy.optimize.linear_sum_assignment, sorted by
    row, with min(n, m) pairs."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError("cost must be a 2-D matrix")
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost
    n, m = c.shape
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    if n == 1 and np.isfinite(c).all():  # one face or one track (the usual case): the cheapest pair, as below
        j = int(np.argmin(c[0]))
        return (np.array([j]), np.array([0])) if transposed else (np.array([0]), np.array([j]))
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)  # p[j]: the row (1-based) assigned to column j; column 0 is a sentinel
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:  # augment along the alternating path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    cols = np.nonzero(p[1:])[0]
    rows = p[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(int), cols[order].astype(int)


def box_distance(track_box: Box, box: Box) -> float:
    """How far `box` is from `track_box`, in units of the track box's diagonal: centre distance plus the
    relative change in size. 0 for the same box; about 1 for a face displaced by its own size."""
    tx0, ty0, tx1, ty1 = track_box
    x0, y0, x1, y1 = box
    tdiag = max(float(np.hypot(tx1 - tx0, ty1 - ty0)), 1e-6)
    diag = float(np.hypot(x1 - x0, y1 - y0))
    centre = np.hypot((x0 + x1 - tx0 - tx1) / 2, (y0 + y1 - ty0 - ty1) / 2)
    return float(centre / tdiag + abs(np.log(max(diag, 1e-6) / tdiag)))


@dataclass
class _Track:
    track_id: int
    box: Box
    missed: int = 0
    hits: int = 1


@dataclass(frozen=True)
class TrackUpdate:
    """The outcome of one frame: a track id per input box (same order), and the tracks that ended."""

    track_ids: tuple[int, ...]
    ended: tuple[int, ...] = field(default=())


class FaceTracker:
    """Assigns stable ids to face boxes, frame after frame. Call `update` once per frame, in order."""

    def __init__(self, max_missed: int = 5, max_distance: float = 0.6, first_id: int = 1):
        if max_missed < 0:
            raise ValueError("max_missed must be >= 0")
        if max_distance <= 0:
            raise ValueError("max_distance must be > 0")
        self.max_missed = max_missed
        self.max_distance = max_distance
        self._first_id = first_id
        self._next_id = first_id
        self._tracks: list[_Track] = []

    @property
    def active_ids(self) -> tuple[int, ...]:
        """Ids of the tracks still alive (seen within the last max_missed frames)."""
        return tuple(t.track_id for t in self._tracks)

    def update(self, boxes: Sequence[Box]) -> TrackUpdate:
        boxes = [tuple(float(v) for v in b) for b in boxes]
        ids: list[int | None] = [None] * len(boxes)
        matched_tracks: set[int] = set()
        if self._tracks and boxes:
            cost = np.array([[box_distance(t.box, b) for b in boxes] for t in self._tracks])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= self.max_distance:
                    track = self._tracks[r]
                    track.box, track.missed = boxes[c], 0
                    track.hits += 1
                    ids[c] = track.track_id
                    matched_tracks.add(r)
        ended = []
        kept = []
        for r, track in enumerate(self._tracks):
            if r not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track.track_id)
                    log.debug("track %d ended after %d missed frames", track.track_id, track.missed - 1)
                    continue
            kept.append(track)
        self._tracks = kept
        for c, box in enumerate(boxes):
            if ids[c] is None:
                track = _Track(self._next_id, box)
                self._next_id += 1
                self._tracks.append(track)
                ids[c] = track.track_id
                log.debug("track %d started", track.track_id)
        return TrackUpdate(tuple(int(i) for i in ids), tuple(ended))

    def reset(self) -> tuple[int, ...]:
        """Forget every track (ids restart); returns the ids that were alive."""
        alive = self.active_ids
        self._tracks = []
        self._next_id = self._first_id
        return alive
