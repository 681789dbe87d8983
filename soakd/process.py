"""Finding and identifying the target process: who it is, where it is, how it ended.

A process is identified by its PID *and* its create time (:class:`ProcessId`),
so a PID the kernel hands to a new process is never mistaken for the old one.
The lookups here (PID file, the listener of a port, a systemd unit's main PID,
a guess at its data dir) are what soakd.target uses to find a target it did
not launch, and its successor after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import psutil

#: psutil adds /proc/stat's btime (whole seconds, re-read each call and moved by
#: clock steps) to the kernel's start ticks, so one process's create time can
#: differ by a second between two readings. PID reuse inside that window would
#: need the PID space to wrap in under 1.5 s.
CREATE_TIME_TOLERANCE_S = 1.5
SYSTEMCTL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProcessId:
    """A process's identity: PID plus create time (wall seconds, as psutil reports it)."""

    pid: int
    create_time: float

    def same_process(self, other: ProcessId | None) -> bool:
        """True if ``other`` is this very process (not a later one given the same PID)."""
        return (
            other is not None
            and other.pid == self.pid
            and abs(other.create_time - self.create_time) < CREATE_TIME_TOLERANCE_S
        )


class ProcessTable(Protocol):
    """The seam between the target logic and the OS process table (fakes in tests)."""

    def lookup(self, pid: int) -> ProcessId | None:
        """The live (non-zombie) process with this PID now, or None."""
        ...

    def exit_fd(self, pid: int) -> int | None:
        """A file descriptor readable once ``pid`` exits (a pidfd), or None to poll."""
        ...


class PsutilTable:
    """The real process table: psutil for identity, ``os.pidfd_open`` for exit notice."""

    def lookup(self, pid: int) -> ProcessId | None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:  # exited, parent has not reaped it
                return None
            return ProcessId(pid, proc.create_time())
        except (psutil.NoSuchProcess, ValueError):
            return None

    def exit_fd(self, pid: int) -> int | None:
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None:
            return None
        try:
            fd: int = pidfd_open(pid)
        except OSError:
            return None
        return fd


# --- where the target is found -------------------------------------------------------


def url_port(url: str) -> int:
    """The TCP port a URL points at (its explicit port, else the scheme's default)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def is_local_host(host: str | None) -> bool:
    """True if ``host`` is this machine (loopback, unspecified, or one of its addresses).

    Blocking: a host name is resolved (run it in a thread).
    """
    if not host or host in ("localhost", socket.gethostname()):
        return True
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False
        addrs = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if any(a.is_loopback or a.is_unspecified for a in addrs):
        return True
    own = {a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic}
    return any(str(a) in own for a in addrs)


@dataclass(frozen=True)
class PidFile:
    """One PID file as read: ``PID`` or Engram's ``PID:PORT``, and when it was written."""

    pid: int
    port: int | None
    mtime: float


def read_pid_file(path: Path) -> PidFile:
    """Parse a PID file; raises OSError if unreadable and ValueError if malformed."""
    text = path.read_text().strip()
    mtime = path.stat().st_mtime
    pid_text, _, port_text = text.partition(":")
    pid = int(pid_text)
    if pid <= 0:
        raise ValueError(f"not a PID: {pid_text!r}")
    return PidFile(pid, int(port_text) if port_text else None, mtime)


def engram_pid_path() -> Path:
    """Where Engram writes its PID file: ``$ENGRAM_PID_PATH`` or Rust's temp_dir()/engram.pid."""
    explicit = os.environ.get("ENGRAM_PID_PATH")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("TMPDIR") or "/tmp") / "engram.pid"


def process_from_pid_file(path: Path, table: ProcessTable) -> ProcessId | None:
    """The live process a PID file names, or None (missing file, stale PID, reused PID).

    A file left behind by a killed process may name a PID the kernel has since
    given to something else: that process started *after* the file was written,
    which is how it is told apart.
    """
    try:
        pf = read_pid_file(path)
    except (OSError, ValueError):
        return None
    found = table.lookup(pf.pid)
    if found is None or found.create_time > pf.mtime + CREATE_TIME_TOLERANCE_S:
        return None
    return found


def listening_inodes(port: int, proc_root: Path = Path("/proc")) -> set[int]:
    """Socket inodes in LISTEN state on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_root / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def listener_pid(port: int, proc_root: Path = Path("/proc")) -> int | None:
    """The lowest PID holding a socket listening on ``port``, or None.

    Scans /proc/*/fd itself rather than psutil.net_connections(), which gives up
    wholesale on one unreadable process; unreadable ones are skipped here. With
    pre-forked workers sharing the socket the lowest PID is usually the parent.
    """
    inodes = listening_inodes(port, proc_root)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = sorted(int(e.name) for e in os.scandir(proc_root) if e.name.isdigit())
    for pid in pids:
        try:
            with os.scandir(proc_root / str(pid) / "fd") as fds:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) in wanted:  # noqa: PTH115 - DirEntry, hot loop
                            return pid
        except OSError:  # gone, or not ours to read
            continue
    return None


async def systemd_main_pid(unit: str) -> int | None:
    """The unit's MainPID via ``systemctl show``; None if it has none (0) now.

    Raises OSError if systemctl cannot run and RuntimeError if it fails.
    """
    proc = await asyncio.create_subprocess_exec(
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        unit,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(SYSTEMCTL_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"systemctl show {unit} took over {SYSTEMCTL_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"systemctl show {unit} failed: {err.decode(errors='replace').strip()}")
    try:
        pid = int(out.decode().strip() or "0")
    except ValueError as exc:
        raise RuntimeError(f"systemctl show {unit}: unexpected output {out!r}") from exc
    return pid or None


def guess_data_dir(target: ProcessId) -> Path | None:
    """Where an Engram process keeps its data: its ``$ENGRAM_DATA_DIR``, else ``<cwd>/engram-data``.

    Blocking (reads /proc/PID/environ and cwd). None if the process cannot be
    read (gone, or another user's without CAP_SYS_PTRACE) or the folder is not there.
    Call it once the target is up (after wait_healthy): for a moment after exec
    the kernel shows an empty environment.
    """
    try:
        proc = psutil.Process(target.pid)
        env = proc.environ()
        cwd = Path(proc.cwd())
    except psutil.Error:
        return None
    raw = env.get("ENGRAM_DATA_DIR") or "engram-data"
    path = Path(raw) if Path(raw).is_absolute() else cwd / raw
    return path if path.is_dir() else None


def describe_exit(returncode: int | None) -> str:
    """Human words for a Popen return code (negative = killed by that signal)."""
    if returncode is None:
        return "exited (status unknown: not soakd's child)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} ({-returncode})"
    return f"exited with status {returncode}"
