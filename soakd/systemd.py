"""sd_notify without a library: READY, STATUS, WATCHDOG and STOPPING datagrams to systemd.

systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) to a ``Type=notify`` service; each notification is one ``AF_UNIX``
datagram of ``KEY=VALUE`` lines. Outside systemd the variable is unset and every
call here is a no-op, so the daemon calls them unconditionally.

The watchdog is petted only while the scheduler is advancing: a wedged soakd
(a stuck event loop, a scheduler that stopped issuing arrivals) then stops
sending ``WATCHDOG=1``, systemd kills it after ``WatchdogSec`` and restarts it
(``Restart=on-abnormal``), and the restarted soakd resumes the same run from its
state dir. A failure to notify is logged and never raised: losing systemd's
view of soakd must not stop the soak.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import structlog

from soakd.model import Clock

log = structlog.get_logger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (or ``socket_path``)."""

    def __init__(
        self, socket_path: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        # ``environ`` exists for tests; the daemon passes nothing and gets os.environ.
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        path = socket_path if socket_path is not None else self._environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if path:
            # A leading "@" names a socket in Linux's abstract namespace (a leading NUL byte).
            self._address = "\0" + path[1:] if path.startswith("@") else path
        self._wedged_logged = False

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (soakd runs under systemd)."""
        return self._address is not None

    def ready(self) -> None:
        """Start-up finished: systemd considers the unit started."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """A one-line progress text that ``systemctl status soakd`` shows."""
        self._send("STATUS=" + " ".join(text.split()))

    def stopping(self) -> None:
        """soakd is shutting down (draining, writing the report)."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Pet the watchdog: soakd is alive and making progress."""
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for more time in the current start-up or stop phase (a long report)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval_s(self) -> float | None:
        """Half of ``$WATCHDOG_USEC``, or None when systemd set no watchdog for this process."""
        usec = self._environ.get("WATCHDOG_USEC")
        pid = self._environ.get("WATCHDOG_PID")
        if not usec or not self.enabled:
            return None
        if pid and pid.strip() != str(os.getpid()):
            return None  # the watchdog is meant for another process (we were forked/exec'd)
        try:
            value = int(usec)
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC", value=usec)
            return None
        return value / 2 / 1_000_000 if value > 0 else None

    async def watchdog_loop(
        self, progress: Callable[[], int], clock: Clock, stall_after_s: float | None = None
    ) -> None:
        """Every watchdog interval, pet the watchdog only if the scheduler is advancing.

        ``progress()`` returns the monotonic-ns instant the scheduler last advanced. It counts
        as advancing when that instant moved since the previous check, or is within
        ``stall_after_s`` of now (defaults to one watchdog interval). A plan with an arrival
        period longer than the interval must pass a ``stall_after_s`` above that period.
        Returns at once when there is no watchdog; otherwise runs until cancelled.
        """
        interval_s = self.watchdog_interval_s()
        if interval_s is None:
            return
        interval_ns = int(interval_s * 1e9)
        stall_ns = interval_ns if stall_after_s is None else int(stall_after_s * 1e9)
        last = progress()
        deadline = clock.monotonic_ns() + interval_ns
        while True:
            await clock.sleep_until(deadline)
            now = clock.monotonic_ns()
            current = progress()
            if current != last or now - current <= stall_ns:
                self.watchdog()
                self._wedged_logged = False
            elif not self._wedged_logged:
                self._wedged_logged = True
                log.error(
                    "scheduler not advancing: no longer petting the systemd watchdog",
                    stalled_s=(now - current) / 1e9,
                )
            last = current
            # Fixed cadence; if we fell far behind (a suspended machine), restart from now.
            deadline = max(deadline + interval_ns, now + interval_ns // 2)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop on a full receiver: a dropped datagram is
                # better than a stalled scheduler.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify failed", message=message.split("=", 1)[0], error=str(exc))
