"""Who is using the app right now, and what they hold: the app's own accounting of live sessions.

A visitor (one browser tab, or one gradio_client Client: Gradio's session hash) owns live sessions, one
per kind (a webcam stream, an RTSP stream), each with its own analyzer (landmarker, tracker, smoother).
Those are released when the visitor leaves (Gradio's unload event: the tab closed, the client's heartbeat
ended) or after `idle_s` without a request, whichever comes first, so memory is bounded by the visitors
active at once, not by all who ever came. At most `max_visitors` hold sessions at once; the next one gets
one clear "busy, try again" message instead of exhausting memory.

Plain Python (no gradio): the handlers and the tests use it directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from stream_fer.app.settings import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_S
from stream_fer.errors import StreamFerError

log = logging.getLogger(__name__)


class AppBusy(StreamFerError):
    """Every live-session place is taken."""


@dataclass(frozen=True)
class VisitorStats:
    live: int  # visitors holding at least one session now
    sessions: int  # sessions open now
    created: int  # sessions ever opened
    released: int  # sessions ever released (left, idle or server closing)
    refused: int  # requests answered "busy"


@dataclass
class _Visitor:
    sessions: dict[str, object] = field(default_factory=dict)
    last_used: float = 0.0
    leases: int = 0  # requests running now with one of its sessions
    leaving: bool = False  # left while a request was running: released when it ends


def release_memory() -> None:
    """Hand freed memory back to the OS: MediaPipe's and numpy's freed blocks otherwise stay in glibc's
    arenas, so the server's RSS would not go down after visitors leave."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas. The server runs each request in one of many worker threads;
    by default each thread that contends gets an arena of its own (up to 8 per core), and memory freed in
    one stays there as fragmentation, so RSS creeps up with every request. Call before the server starts."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).mallopt(M_ARENA_MAX, int(arenas))
    except (OSError, AttributeError):  # not glibc
        return


def close_quietly(session) -> None:
    close = getattr(session, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # releasing must never take the server down
            log.exception("app: closing a session failed")


class Visitors:
    """Live sessions by visitor id and kind, with a cap, an idle timeout and counters."""

    def __init__(self, max_visitors: int = DEFAULT_MAX_SESSIONS, idle_s: float = DEFAULT_SESSION_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_visitors < 1:
            raise ValueError("max_visitors must be at least 1")
        self.max_visitors = int(max_visitors)
        self.idle_s = float(idle_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._visitors: dict[str, _Visitor] = {}
        self._created = self._released = self._refused = 0
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self._chores: list[Callable[[], int]] = []

    def busy_message(self) -> str:
        return (f"the app is busy: {self.max_visitors} visitors are using it right now; "
                "try again in a minute")

    @contextmanager
    def lease(self, visitor: str, kind: str, create: Callable[[], object]) -> Iterator[object]:
        """The visitor's session of this kind, created (outside the lock) if it has none; held for one
        request, so an idle timeout or a leave never closes it under a running request."""
        self._ensure_reaper()
        with self._lock:
            entry = self._visitors.get(visitor)
            if entry is None:
                if len(self._visitors) >= self.max_visitors:
                    self._refused += 1
                    raise AppBusy(self.busy_message())
                entry = self._visitors[visitor] = _Visitor()
            entry.leaving = False
            entry.leases += 1
            entry.last_used = self._clock()
            session = entry.sessions.get(kind)
        try:
            if session is None:
                fresh = create()
                with self._lock:
                    session = entry.sessions.get(kind)
                    if session is None:
                        session = entry.sessions[kind] = fresh
                        self._created += 1
                if session is not fresh:  # two first requests of one visitor raced: keep the first one
                    self._close([fresh])
            yield session
        finally:
            to_close = []
            with self._lock:
                entry.leases -= 1
                entry.last_used = self._clock()
                if entry.leases == 0 and (entry.leaving or not entry.sessions):
                    to_close = self._drop(visitor, entry)
            self._close(to_close)

    def peek(self, visitor: str, kind: str):
        """The visitor's session of this kind if it has one (no lease, no creation)."""
        with self._lock:
            entry = self._visitors.get(visitor)
            return None if entry is None else entry.sessions.get(kind)

    def touch(self, visitor: str) -> None:
        with self._lock:
            entry = self._visitors.get(visitor)
            if entry is not None:
                entry.last_used = self._clock()

    def end(self, visitor: str, kind: str) -> None:
        """Close one of the visitor's sessions (e.g. a stopped RTSP stream)."""
        with self._lock:
            entry = self._visitors.get(visitor)
            session = None if entry is None else entry.sessions.pop(kind, None)
            if session is not None:
                self._released += 1
            if entry is not None and not entry.sessions and entry.leases == 0:
                del self._visitors[visitor]
        if session is not None:
            self._close([session])

    def leave(self, visitor: str) -> None:
        """The visitor left: release everything it holds now, or when its running request ends."""
        with self._lock:
            entry = self._visitors.get(visitor)
            if entry is None:
                return
            if entry.leases:
                entry.leaving = True
                return
            to_close = self._drop(visitor, entry)
        self._close(to_close)

    def reap(self) -> int:
        """Release visitors idle for more than idle_s; how many were released."""
        now = self._clock()
        to_close = []
        with self._lock:
            idle = [v for v, e in self._visitors.items() if not e.leases and now - e.last_used > self.idle_s]
            for visitor in idle:
                to_close += self._drop(visitor, self._visitors[visitor])
        self._close(to_close)
        return len(idle)

    def add_chore(self, chore: Callable[[], int]) -> None:
        """Run `chore()` with every idle check (e.g. shrinking a pool); when it frees something (returns
        more than 0) the freed memory is handed back to the OS."""
        self._chores.append(chore)
        self._ensure_reaper()

    def tidy(self) -> int:
        """One idle check: release idle visitors, run the chores; how many things were released."""
        freed = self.reap()
        chores = sum(chore() for chore in list(self._chores))
        if chores:
            release_memory()
        return freed + chores

    def close_all(self) -> None:
        """The server is stopping: release every session and stop the idle reaper."""
        self._stop.set()
        with self._lock:
            to_close = [s for v in list(self._visitors) for s in self._drop(v, self._visitors[v])]
        self._close(to_close)

    def stats(self) -> VisitorStats:
        with self._lock:
            return VisitorStats(live=len(self._visitors), sessions=sum(len(e.sessions) for e in
                                                                       self._visitors.values()),
                                created=self._created, released=self._released, refused=self._refused)

    # --------------------------------------------------------------------------------------- inside

    def _drop(self, visitor: str, entry: _Visitor) -> list:
        """Forget a visitor (lock held); its sessions, to close outside the lock."""
        del self._visitors[visitor]
        sessions = list(entry.sessions.values())
        self._released += len(sessions)
        return sessions

    def _close(self, sessions: list) -> None:
        if not sessions:
            return
        for session in sessions:
            close_quietly(session)
        release_memory()
        log.info("app: released %d session(s); %d visitor(s) live", len(sessions), self.stats().live)

    def _ensure_reaper(self) -> None:
        if self._reaper is not None or self._stop.is_set():
            return
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap_forever, name="app-visitors", daemon=True)
                self._reaper.start()

    def _reap_forever(self) -> None:
        every = max(0.5, min(10.0, self.idle_s / 4))
        while not self._stop.wait(every):
            try:
                self.tidy()
            except Exception:
                log.exception("app: releasing idle sessions failed")
