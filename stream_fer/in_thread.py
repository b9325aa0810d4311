"""A value made in a daemon thread, for start-up work that overlaps other start-up work (MediaPipe builds its
graphs in native code that leaves the GIL free)."""

from __future__ import annotations

import threading
import time

_abandoned: set[threading.Thread] = set()  # discards still running (wait_for_abandoned)


def wait_for_abandoned(timeout: float) -> None:
    """Wait for the abandoned values to be made and closed: a process about to exit calls this, so no native
    object is closed by a daemon thread while the interpreter shuts down."""
    deadline = time.monotonic() + timeout
    for thread in list(_abandoned):
        thread.join(max(0.0, deadline - time.monotonic()))


class InThread:
    """result() waits for the value (and raises what making it raised); discard() waits and closes what was
    made, for when the caller fails in the meantime; abandon() closes it once made, without waiting."""

    def __init__(self, make, name: str) -> None:
        self._make = make
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._make()
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread)
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def discard(self) -> None:
        self._thread.join()
        if self._value is not None:
            self._value.close()
            self._value = None

    def abandon(self) -> None:
        def discard() -> None:
            try:
                self.discard()
            finally:
                _abandoned.discard(threading.current_thread())

        thread = threading.Thread(target=discard, name=f"{self._thread.name}-discard", daemon=True)
        _abandoned.add(thread)
        thread.start()
