"""Free space on the state dir's filesystem, watched so a full disk thins data, not soakd.

:meth:`DiskWatch.check` reads ``statvfs`` (a cheap syscall; the daemon may still
call it through ``asyncio.to_thread``) and reports transitions only: one
``disk_low`` event when free space falls below the threshold, one ``disk_ok``
when it is back above the threshold plus a 10 % margin, so a disk hovering at
the line does not flap. What to do when low (keep fewer samples, stop storing
raw detail) is the store's business; this module only says when.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from soakd.model import Clock, Event, EventKind

log = structlog.get_logger(__name__)

#: Free space must be this much above the threshold before "low" clears.
RECOVERY_MARGIN = 0.10


class DiskWatch:
    """Says when the filesystem holding ``path`` has less than ``min_free_bytes`` free."""

    def __init__(
        self,
        path: Path,
        min_free_bytes: int,
        *,
        on_event: Callable[[Event], None],
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self._emit = on_event
        self._statvfs = statvfs
        self._clock = clock
        self.low = False
        self.free_bytes: int | None = None

    def check(self) -> bool:
        """Read free space now; True while it is low. Emits an event on each change.

        A failing statvfs (the dir vanished, an NFS hiccup) keeps the last state:
        a watcher must not be the thing that kills the run.
        """
        try:
            st = self._statvfs(self.path)
        except OSError as exc:
            log.warning("statvfs failed; disk state unchanged", path=str(self.path), error=str(exc))
            return self.low
        # f_bavail: blocks an unprivileged writer may still use (root keeps a reserve).
        free = st.f_bavail * st.f_frsize
        self.free_bytes = free
        if not self.low and free < self.min_free_bytes:
            self.low = True
            self._event(
                EventKind.DISK_LOW, f"only {_mib(free)} free on {self.path}'s filesystem", free
            )
        elif self.low and free >= self.min_free_bytes * (1 + RECOVERY_MARGIN):
            self.low = False
            self._event(
                EventKind.DISK_OK, f"{_mib(free)} free again on {self.path}'s filesystem", free
            )
        return self.low

    def _event(self, kind: EventKind, message: str, free: int) -> None:
        t = self._clock.wall() if self._clock is not None else time.time()
        detail = {"free_bytes": free, "min_free_bytes": self.min_free_bytes, "path": str(self.path)}
        log.warning(kind, **detail) if kind == EventKind.DISK_LOW else log.info(kind, **detail)
        self._emit(
            Event(
                t=t,
                kind=kind,
                message=f"{message} (threshold {_mib(self.min_free_bytes)})",
                detail=detail,
            )
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"
