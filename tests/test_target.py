"""Tests for soakd.target: launching, attaching, crash detection, restarts, following."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import pytest
import structlog.testing

from soakd.clock import FakeClock, SystemClock
from soakd.engram import EngramClient
from soakd.errors import StartupError
from soakd.model import Event
from soakd.process import (
    PidFile,
    ProcessId,
    PsutilTable,
    guess_data_dir,
    is_local_host,
    listener_pid,
    process_from_pid_file,
    read_pid_file,
)
from soakd.sampler import Sampler
from soakd.spec.model import RestartPolicy, TargetSpec
from soakd.target import Target
from soakd.testing import async_wait_for, free_port, wait_for

#: A tiny HTTP server: argv = [port, pid_file?]. Writes Engram's "PID:PORT" file atomically.
SERVER = r"""
import http.server, os, sys
port = int(sys.argv[1])
pid_file = sys.argv[2] if len(sys.argv) > 2 else ""
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
if pid_file:
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}:{srv.server_port}")
    os.replace(pid_file + ".tmp", pid_file)
print("listening", srv.server_port, flush=True)
sys.stderr.write("hello on stderr\n"); sys.stderr.flush()
srv.serve_forever()
"""

REPO_ROOT = str(Path(__file__).resolve().parents[1])
KILL_SLACK_S = 0.5  # scheduling noise on a shared 2-core machine, on top of the 1 s promise


def alive_probe(port: int) -> Callable[[], Awaitable[bool]]:
    """An ``alive()`` callable: True once something accepts on 127.0.0.1:port."""

    async def alive() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return alive


class Children:
    """Child processes a test starts itself; all killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def server(self, pid_file: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
        """Start SERVER writing ``pid_file``; return it and its port once listening."""
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(pid_file)])
        self.procs.append(proc)
        pf = wait_for(lambda: _try_read(pid_file, proc.pid), 15, what="pid file")
        assert pf is not None and pf.port is not None
        return proc, pf.port

    def sleeper(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _try_read(path: Path, pid: int) -> PidFile | None:
    try:
        pf = read_pid_file(path)
    except (OSError, ValueError):
        return None
    return pf if pf.pid == pid else None


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    yield c
    c.close()


class Recorder:
    """Collects events; helpers to find them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


def current_of(target: Target) -> ProcessId | None:
    """The target's current process, read afresh (keeps mypy from carrying a narrowing)."""
    return target.current


def num(value: object) -> float:
    """An event detail value that must be a number."""
    assert isinstance(value, int | float)
    return float(value)


def make_target(spec: TargetSpec, tmp_path: Path, rec: Recorder, **kw: object) -> Target:
    return Target(
        spec,
        state_dir=tmp_path / "state",
        clock=SystemClock(),
        on_event=rec,
        poll_interval_s=kw.pop("poll_interval_s", 1.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def launch_spec(port: int, **kw: object) -> TargetSpec:
    return TargetSpec(
        url=f"http://127.0.0.1:{port}",
        command=("{python}", "-c", SERVER, "{port}"),
        **kw,  # type: ignore[arg-type]
    )


# --- launched (owned) targets ------------------------------------------------------------


async def test_launched_target_sigkilled_is_recorded_as_crash_within_one_second(
    tmp_path: Path,
) -> None:
    """A launched child SIGKILLed is recorded as a crash with signal 9 within ~1 s, then down."""
    rec = Recorder()
    port = free_port()
    target = make_target(launch_spec(port), tmp_path, rec)
    started = await target.start()
    assert started is not None and target.owned and target.current == started
    await target.wait_healthy(alive_probe(port), 15)
    watcher = asyncio.create_task(target.watch())
    try:
        killed_at = time.time()
        os.kill(started.pid, signal.SIGKILL)
        crash = (await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash"))[0]
        assert crash.detail["signal"] == 9
        assert crash.detail["pid"] == started.pid
        assert crash.t - killed_at <= 1.0 + KILL_SLACK_S
        await asyncio.wait_for(watcher, 5)  # policy never: watch ends after target_down
        assert [e.kind for e in rec.events] == ["target_crash", "target_down"]
        assert current_of(target) is None and target.crashes == 1 and target.restarts == 0
    finally:
        watcher.cancel()
        await target.stop(2)


async def test_launched_target_output_is_captured_in_state_dir(tmp_path: Path) -> None:
    """The launched target's stdout and stderr land in the state dir's log files."""
    rec = Recorder()
    port = free_port()
    target = make_target(launch_spec(port), tmp_path, rec)
    await target.start()
    try:
        await target.wait_healthy(alive_probe(port), 15)
        wait_for(lambda: b"listening" in target.stdout_path.read_bytes(), 5, what="stdout")
        wait_for(lambda: b"hello on stderr" in target.stderr_path.read_bytes(), 5, what="stderr")
        assert target.stdout_path.parent == tmp_path / "state"
    finally:
        rc = await target.stop(5)
    assert rc is not None and target.current is None


async def test_on_failure_restarts_with_new_pid_up_to_max(tmp_path: Path) -> None:
    """Policy on-failure relaunches after each kill (new PID, restart event) until restart_max."""
    rec = Recorder()
    port = free_port()
    spec = launch_spec(
        port, restart=RestartPolicy.ON_FAILURE, restart_max=2, restart_backoff_s=0.05
    )
    target = make_target(spec, tmp_path, rec)
    first = await target.start()
    assert first is not None
    await target.wait_healthy(alive_probe(port), 15)
    watcher = asyncio.create_task(target.watch())
    try:
        pids = [first.pid]
        for attempt in (1, 2):
            os.kill(pids[-1], signal.SIGKILL)
            restarts = await async_wait_for(
                lambda n=attempt: len(rec.of("target_restart")) >= n,  # type: ignore[misc]
                20,
                what=f"restart {attempt}",
            )
            assert restarts
            restart = rec.of("target_restart")[-1]
            assert restart.detail["attempt"] == attempt
            assert restart.detail["healthy"] is True  # downtime counted until it answered
            assert num(restart.detail["downtime_s"]) > 0
            new_pid = restart.detail["pid"]
            assert isinstance(new_pid, int) and new_pid not in pids
            assert target.current is not None and target.current.pid == new_pid
            pids.append(new_pid)
        os.kill(pids[-1], signal.SIGKILL)
        await asyncio.wait_for(watcher, 10)
        kinds = [e.kind for e in rec.events]
        assert kinds.count("target_crash") == 3 and kinds.count("target_restart") == 2
        assert kinds[-1] == "target_down" and "restart_max" in rec.events[-1].message
        assert target.restarts == 2 and target.crashes == 3
    finally:
        watcher.cancel()
        await target.stop(2)


async def test_stop_during_restart_backoff_launches_nothing(tmp_path: Path) -> None:
    """stop() while a restart is backing off ends watch() and starts no new process."""
    rec = Recorder()
    port = free_port()
    spec = launch_spec(port, restart=RestartPolicy.ON_FAILURE, restart_backoff_s=30.0)
    target = make_target(spec, tmp_path, rec)
    first = await target.start()
    assert first is not None
    watcher = asyncio.create_task(target.watch())
    os.kill(first.pid, signal.SIGKILL)
    await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash")
    assert await target.stop(2) == -signal.SIGKILL
    await asyncio.wait_for(watcher, 5)
    assert rec.of("target_restart") == [] and target.restarts == 0
    assert current_of(target) is None


async def test_clean_exit_under_on_failure_is_not_restarted(tmp_path: Path) -> None:
    """A launched target exiting with status 0 is recorded, and on-failure leaves it down."""
    rec = Recorder()
    spec = TargetSpec(
        url=f"http://127.0.0.1:{free_port()}",
        command=("{python}", "-c", "pass"),
        restart=RestartPolicy.ON_FAILURE,
    )
    target = make_target(spec, tmp_path, rec, poll_interval_s=0.1)
    await target.start()
    await asyncio.wait_for(target.watch(), 10)
    assert [e.kind for e in rec.events] == ["target_crash", "target_down"]
    assert rec.events[0].detail["returncode"] == 0 and rec.events[0].detail["signal"] is None
    assert "exited cleanly" in rec.events[1].message


async def test_startup_failure_raises_with_stderr_tail(tmp_path: Path) -> None:
    """A command that exits at once makes wait_healthy raise StartupError quoting its stderr."""
    rec = Recorder()
    script = "import sys; sys.stderr.write('boom: ' + 'bad config line 7\\n'); sys.exit(3)"
    spec = TargetSpec(url=f"http://127.0.0.1:{free_port()}", command=("{python}", "-c", script))
    target = make_target(spec, tmp_path, rec)
    await target.start()
    with pytest.raises(StartupError) as err:
        await target.wait_healthy(alive_probe(free_port()), 15)
    assert "boom: bad config line 7" in str(err.value)
    assert "status 3" in str(err.value)


async def test_never_healthy_raises_after_timeout(tmp_path: Path) -> None:
    """A target that runs but never answers fails wait_healthy after the timeout."""
    rec = Recorder()
    port = free_port()
    spec = TargetSpec(
        url=f"http://127.0.0.1:{port}",
        command=(
            "{python}",
            "-c",
            "import sys,time; print('st' + 'uck', file=sys.stderr, flush=True); time.sleep(60)",
        ),
    )
    target = make_target(spec, tmp_path, rec)
    await target.start()
    try:
        wait_for(lambda: b"\nstuck\n" in target.stderr_path.read_bytes(), 10, what="stderr")
        with pytest.raises(StartupError, match=r"not healthy after 0\.3s[\s\S]*stuck"):
            await target.wait_healthy(alive_probe(port), 0.3)
    finally:
        await target.stop(2)


async def test_never_healthy_says_why_the_probe_failed(tmp_path: Path) -> None:
    """Nothing ever listens: the message names the probe and "connection refused"."""
    from soakd.engram import EngramClient

    port = free_port()
    spec = TargetSpec(url=f"http://127.0.0.1:{port}", pid=os.getpid())
    target = make_target(spec, tmp_path, Recorder())
    async with EngramClient(spec.url, clock=SystemClock()) as client:
        with pytest.raises(StartupError) as err:
            await target.wait_healthy(client.alive, 0.5, why_not=lambda: client.last_alive_problem)
    assert "not healthy after 0.5s (GET /health/alive: connection refused)" in str(err.value)


async def test_launch_refuses_a_port_already_served(tmp_path: Path, children: Children) -> None:
    """Launching onto a port something already serves is refused (Engram would move ports)."""
    proc, port = children.server(tmp_path / "other.pid")
    target = make_target(launch_spec(port), tmp_path, Recorder())
    with pytest.raises(StartupError, match=f"PID {proc.pid} is already listening"):
        await target.start()
    assert not target.stdout_path.exists()  # nothing was launched


async def test_missing_executable_is_a_startup_error(tmp_path: Path) -> None:
    """A command that cannot be executed is a StartupError naming it."""
    # A free port, not the default 7432: launching onto a busy port is refused first.
    url = f"http://127.0.0.1:{free_port()}"
    spec = TargetSpec(url=url, command=(str(tmp_path / "no-such-engram"), "start"))
    target = make_target(spec, tmp_path, Recorder())
    with pytest.raises(StartupError, match="no-such-engram"):
        await target.start()


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    """stop() sends SIGTERM, then SIGKILL after its timeout, and returns the exit status."""
    script = (
        "import signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('rea' + 'dy', flush=True); time.sleep(60)"
    )
    spec = TargetSpec(url=f"http://127.0.0.1:{free_port()}", command=("{python}", "-c", script))
    target = make_target(spec, tmp_path, Recorder())
    await target.start()
    wait_for(lambda: b"\nready\n" in target.stdout_path.read_bytes(), 10, what="ready")
    assert await target.stop(0.3) == -signal.SIGKILL


# --- attached targets ----------------------------------------------------------------------


async def test_attach_by_pid_file_in_engram_format(tmp_path: Path, children: Children) -> None:
    """A PID file in Engram's PID:PORT format finds the live process and its create time."""
    pid_file = tmp_path / "engram.pid"
    proc, port = children.server(pid_file)
    assert pid_file.read_text() == f"{proc.pid}:{port}"
    spec = TargetSpec(url=f"http://127.0.0.1:{port}", pid_file=str(pid_file))
    target = make_target(spec, tmp_path, Recorder())
    found = await target.start()
    assert found == ProcessId(proc.pid, psutil.Process(proc.pid).create_time())
    assert not target.owned
    assert await target.stop() is None
    assert proc.poll() is None  # an attached target is never signalled


async def test_attach_by_listening_port(tmp_path: Path, children: Children) -> None:
    """With no target section, the process listening on the URL's port is found."""
    proc, port = children.server(tmp_path / "x.pid")
    assert listener_pid(port) == proc.pid
    target = make_target(TargetSpec(url=f"http://127.0.0.1:{port}"), tmp_path, Recorder())
    found = await target.start()
    assert found is not None and found.pid == proc.pid


async def test_default_falls_back_to_engram_pid_file_with_matching_port(
    tmp_path: Path, children: Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening: $ENGRAM_PID_PATH is used, but only if its port is the URL's."""
    proc = children.sleeper()
    port = free_port()
    pid_path = tmp_path / "engram.pid"
    monkeypatch.setenv("ENGRAM_PID_PATH", str(pid_path))
    pid_path.write_text(f"{proc.pid}:{port}")
    target = make_target(TargetSpec(url=f"http://127.0.0.1:{port}"), tmp_path, Recorder())
    found = await target.start()
    assert found is not None and found.pid == proc.pid
    pid_path.write_text(f"{proc.pid}:{port + 1}")  # an Engram that moved to another port
    other = make_target(TargetSpec(url=f"http://127.0.0.1:{port}"), tmp_path, Recorder())
    assert await other.start() is None


async def test_remote_url_is_not_searched(tmp_path: Path) -> None:
    """A URL on another host gives no local process to sample: start() returns None."""
    target = make_target(TargetSpec(url="http://192.0.2.10:7432"), tmp_path, Recorder())
    assert await target.start() is None and target.current is None


@pytest.mark.parametrize(
    ("spec_kw", "match"),
    [
        ({"pid": 0x3FFFFFFF}, "no such process"),
        ({"pid_file": "/nonexistent/engram.pid"}, "cannot read"),
    ],
)
async def test_explicit_attach_that_finds_nothing_is_a_startup_error(
    tmp_path: Path, spec_kw: dict[str, object], match: str
) -> None:
    """An explicit pid or pid_file naming nothing is a StartupError, not a silent None."""
    target = make_target(TargetSpec(**spec_kw), tmp_path, Recorder())  # type: ignore[arg-type]
    with pytest.raises(StartupError, match=match):
        await target.start()


async def test_stale_pid_file_is_a_startup_error(tmp_path: Path, children: Children) -> None:
    """A PID file naming a dead process is reported as stale."""
    proc = children.sleeper()
    proc.kill()
    proc.wait(10)
    pid_file = tmp_path / "engram.pid"
    pid_file.write_text(f"{proc.pid}:7432")
    target = make_target(TargetSpec(pid_file=str(pid_file)), tmp_path, Recorder())
    with pytest.raises(StartupError, match="stale"):
        await target.start()


async def test_externally_restarted_target_is_followed(tmp_path: Path, children: Children) -> None:
    """Killed and restarted by someone else, the new process is found via its PID file."""
    rec = Recorder()
    pid_file = tmp_path / "engram.pid"
    first, port = children.server(pid_file)
    spec = TargetSpec(url=f"http://127.0.0.1:{port}", pid_file=str(pid_file))
    target = make_target(spec, tmp_path, rec, poll_interval_s=0.2)
    await target.start()
    watcher = asyncio.create_task(target.watch())
    try:
        killed_at = time.time()
        first.kill()
        crash = (await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash"))[0]
        assert crash.t - killed_at <= 1.0 + KILL_SLACK_S
        assert crash.detail["pid"] == first.pid and crash.detail["returncode"] is None
        assert current_of(target) is None
        first.wait(5)
        second, _ = children.server(pid_file, port)  # the "supervisor" brings it back
        restart = (await async_wait_for(lambda: rec.of("target_restart"), 10, what="restart"))[0]
        assert restart.detail["old_pid"] == first.pid
        assert restart.detail["new_pid"] == second.pid
        assert restart.detail["pid_reused"] is False
        assert num(restart.detail["downtime_s"]) > 0
        assert target.current is not None and target.current.pid == second.pid
        assert target.restarts == 1 and target.crashes == 1
    finally:
        watcher.cancel()
        await target.stop()


async def test_systemd_unit_main_pid_is_followed(
    tmp_path: Path, children: Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd_unit: MainPID from `systemctl show` (a stand-in script), followed across restarts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    main_pid = tmp_path / "mainpid"
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\n[ "$5" = engram.service ] || exit 1\ncat {main_pid}\n')
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    first = children.sleeper()
    main_pid.write_text(f"{first.pid}\n")
    rec = Recorder()
    spec = TargetSpec(systemd_unit="engram.service")
    target = make_target(spec, tmp_path, rec, poll_interval_s=0.2)
    found = await target.start()
    assert found is not None and found.pid == first.pid
    watcher = asyncio.create_task(target.watch())
    try:
        main_pid.write_text("0\n")  # between runs systemd reports no main process
        first.kill()
        await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash")
        second = children.sleeper()
        main_pid.write_text(f"{second.pid}\n")
        restart = (await async_wait_for(lambda: rec.of("target_restart"), 10, what="restart"))[0]
        assert (restart.detail["old_pid"], restart.detail["new_pid"]) == (first.pid, second.pid)
    finally:
        watcher.cancel()
    main_pid.write_text("0\n")
    with pytest.raises(StartupError, match="no main process"):
        await make_target(spec, tmp_path, Recorder()).start()


# --- PID reuse, with a fake process table --------------------------------------------------


class FakeTable:
    """A process table the test edits: pid -> create time; no pidfds, so the target polls."""

    def __init__(self) -> None:
        self.procs: dict[int, float] = {}

    def lookup(self, pid: int) -> ProcessId | None:
        ct = self.procs.get(pid)
        return None if ct is None else ProcessId(pid, ct)

    def exit_fd(self, pid: int) -> int | None:
        return None


async def test_pid_reuse_is_told_apart_by_create_time(tmp_path: Path) -> None:
    """Same PID with a new create time is a crash plus a restart flagged pid_reused."""
    table = FakeTable()
    now = time.time()
    table.procs[4242] = now - 100
    pid_file = tmp_path / "engram.pid"
    pid_file.write_text("4242:7432")
    rec = Recorder()
    spec = TargetSpec(pid_file=str(pid_file))
    target = make_target(spec, tmp_path, rec, poll_interval_s=0.02, table=table)
    assert await target.start() == ProcessId(4242, now - 100)
    watcher = asyncio.create_task(target.watch())
    try:
        table.procs[4242] = now  # the old process died; a new one was given PID 4242
        pid_file.write_text("4242:7432")  # ...and it wrote its PID file
        restart = (await async_wait_for(lambda: rec.of("target_restart"), 5, what="restart"))[0]
        assert [e.kind for e in rec.events] == ["target_crash", "target_restart"]
        assert restart.detail["old_pid"] == restart.detail["new_pid"] == 4242
        assert restart.detail["pid_reused"] is True
        assert target.current == ProcessId(4242, now)
    finally:
        watcher.cancel()


def test_stale_pid_file_whose_pid_was_reused_is_not_taken(tmp_path: Path) -> None:
    """A process that started after the PID file was written is not the file's process."""
    table = FakeTable()
    pid_file = tmp_path / "engram.pid"
    pid_file.write_text("4242:7432")
    mtime = pid_file.stat().st_mtime
    table.procs[4242] = mtime + 60
    assert process_from_pid_file(pid_file, table) is None
    table.procs[4242] = mtime - 60
    assert process_from_pid_file(pid_file, table) == ProcessId(4242, mtime - 60)


def test_process_id_same_process_tolerates_create_time_jitter() -> None:
    """create_time read twice may differ by under a second; a new process differs by more."""
    a = ProcessId(10, 1000.0)
    assert a.same_process(ProcessId(10, 1000.9))
    assert not a.same_process(ProcessId(10, 1005.0))
    assert not a.same_process(ProcessId(11, 1000.0))
    assert not a.same_process(None)


def test_real_table_sees_zombies_as_gone(children: Children) -> None:
    """A child that exited but was not reaped yet counts as gone."""
    proc = children.sleeper()
    table = PsutilTable()
    assert table.lookup(proc.pid) is not None
    proc.kill()
    wait_for(lambda: table.lookup(proc.pid) is None, 5, what="zombie seen as gone")


class NoPidfdTable(PsutilTable):
    """The real table without pidfds: death is found by polling only."""

    def exit_fd(self, pid: int) -> int | None:
        return None


async def test_attached_death_is_found_by_polling_within_one_interval(
    tmp_path: Path, children: Children
) -> None:
    """Without a pidfd, an attached process's death is still noticed within one poll interval."""
    proc = children.sleeper()
    rec = Recorder()
    spec = TargetSpec(url="http://192.0.2.10:7432", pid=proc.pid)
    target = make_target(spec, tmp_path, rec, table=NoPidfdTable())
    assert (await target.start()) is not None
    watcher = asyncio.create_task(target.watch())
    try:
        await asyncio.sleep(0)  # let watch() begin its first interval before the kill
        killed_at = time.time()
        proc.kill()
        crash = (await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash"))[0]
        assert crash.t - killed_at <= 1.0 + KILL_SLACK_S
        assert crash.detail["pid"] == proc.pid and crash.detail["signal"] is None
    finally:
        watcher.cancel()


# --- the bundled reference target --------------------------------------------------------


def health_alive(url: str) -> Callable[[], Awaitable[bool]]:
    """An ``alive()`` callable: GET /health/alive answers 200."""

    async def alive() -> bool:
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/health/alive", timeout=aiohttp.ClientTimeout(total=2)) as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return alive


async def test_reference_target_owned_is_restarted_after_sigkill(tmp_path: Path) -> None:
    """The reference server, launched by soakd and SIGKILLed, is recorded and relaunched healthy."""
    rec = Recorder()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = TargetSpec(
        url=url,
        command=("{python}", "-m", "soakd.reference", "--port", "{port}", "--host", "127.0.0.1"),
        env=(("PYTHONPATH", REPO_ROOT),),
        restart=RestartPolicy.ON_FAILURE,
        restart_backoff_s=0.05,
    )
    target = make_target(spec, tmp_path, rec)
    first = await target.start()
    assert first is not None
    await target.wait_healthy(health_alive(url), 20)
    watcher = asyncio.create_task(target.watch())
    try:
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        restart = (await async_wait_for(lambda: rec.of("target_restart"), 30, what="restart"))[0]
        crash = rec.of("target_crash")[0]
        assert crash.detail["signal"] == 9 and crash.t - killed_at <= 1.0 + KILL_SLACK_S
        assert restart.detail["healthy"] is True and restart.detail["pid"] != first.pid
        assert await health_alive(url)()
        sampler = Sampler(lambda: target.current, clock=SystemClock(), on_event=rec)
        sample = await asyncio.to_thread(sampler.sample_once, time.time())
        assert sample.pid == restart.detail["pid"] and sample.rss_bytes and sample.heap_bytes
    finally:
        watcher.cancel()
        assert await target.stop(10) is not None


@pytest.mark.slow
async def test_reference_target_restarted_elsewhere_is_followed(tmp_path: Path) -> None:
    """The reference server, killed and restarted by someone else, is followed via its PID file."""
    from soakd.reference.harness import start_reference_async

    pid_file = tmp_path / "engram.pid"
    first = await start_reference_async("--pid-file", str(pid_file))
    second = None
    rec = Recorder()
    spec = TargetSpec(url=first.url, pid_file=str(pid_file))
    target = make_target(spec, tmp_path, rec)
    watcher: asyncio.Task[None] | None = None
    try:
        found = await target.start()
        assert found is not None and found.pid == first.pid
        watcher = asyncio.create_task(target.watch())
        killed_at = time.time()
        first.kill(signal.SIGKILL)
        crash = (await async_wait_for(lambda: rec.of("target_crash"), 5, what="crash"))[0]
        assert crash.t - killed_at <= 1.0 + KILL_SLACK_S
        second = await start_reference_async("--pid-file", str(pid_file))
        restart = (await async_wait_for(lambda: rec.of("target_restart"), 10, what="restart"))[0]
        assert (restart.detail["old_pid"], restart.detail["new_pid"]) == (first.pid, second.pid)
    finally:
        if watcher is not None:
            watcher.cancel()
        first.stop(5)
        if second is not None:
            second.stop(5)


def test_guess_data_dir_reads_the_targets_env_and_cwd(tmp_path: Path, children: Children) -> None:
    """The data dir is $ENGRAM_DATA_DIR (relative to the target's cwd), else <cwd>/engram-data."""
    (tmp_path / "engram-data").mkdir()
    (tmp_path / "custom").mkdir()
    script = "import time; time.sleep(120)"
    plain = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    custom = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "ENGRAM_DATA_DIR": "custom"},
    )
    children.procs += [plain, custom]
    # Right after exec the kernel briefly shows an empty environment.
    wait_for(lambda: "ENGRAM_DATA_DIR" in psutil.Process(custom.pid).environ(), 10, what="env")
    table = PsutilTable()
    plain_id, custom_id = table.lookup(plain.pid), table.lookup(custom.pid)
    assert plain_id is not None and custom_id is not None
    assert guess_data_dir(plain_id) == tmp_path / "engram-data"
    assert guess_data_dir(custom_id) == tmp_path / "custom"


def test_is_local_host() -> None:
    """Loopback, unspecified and this machine's own addresses are local; others are not."""
    for host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", None, socket.gethostname()):
        assert is_local_host(host), host
    for host in ("192.0.2.10", "no-such-host.invalid"):
        assert not is_local_host(host), host


async def test_a_booting_targets_refusals_are_debug_and_a_later_one_is_info() -> None:
    """Health probes against a target not listening yet log at debug, not info (issue 19).

    The first refusal a measured request meets afterwards is still logged at info.
    """
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with structlog.testing.capture_logs() as logs:
        async with EngramClient(url, clock=SystemClock(), timeout_s=5) as client:
            assert await client.alive() is False
            assert await client.alive() is False
            probed = [(e["log_level"], e["event"]) for e in logs]
            ex = await client.exchange("GET", "/api/v1/spaces")
    assert ex.failure is not None
    assert probed == [("debug", "engram_not_answering_yet")] * 2
    assert [(e["log_level"], e["event"]) for e in logs][2:] == [("info", "engram_request_failed")]


async def test_wait_healthy_stops_when_cancelled_as_the_probe_answers(tmp_path: Path) -> None:
    """Cancelling the health wait ends it, even when the cancel lands as the probe answers.

    The probe is held on a gate; the cancel comes 0, 1, 2, ... loop steps after it opens.
    Python 3.11's ``wait_for`` returned the probe's answer instead, and start-up carried on
    after a shutdown had cancelled it (issue 19).
    """
    went_on: list[int] = []
    for steps in range(10):
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asked: list[int] = []

        async def alive(gate: asyncio.Future[None] = gate, asked: list[int] = asked) -> bool:
            asked.append(1)
            await gate
            return True

        target = Target(
            TargetSpec(url="http://127.0.0.1:9"),
            state_dir=tmp_path / f"state{steps}",
            clock=FakeClock(),
            on_event=Recorder(),
        )
        task = asyncio.create_task(target.wait_healthy(alive, 30))
        for _ in range(100):
            if asked:
                break
            await asyncio.sleep(0)
        assert asked, "the health wait never probed"
        gate.set_result(None)
        for _ in range(steps):
            await asyncio.sleep(0)
        if not task.cancel():
            continue  # healthy and returned before the cancel: nothing was swallowed
        for _ in range(100):
            if task.done():
                break
            await asyncio.sleep(0)
        if not task.cancelled():
            went_on.append(steps)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert went_on == [], f"wait_healthy went on after a cancel {went_on} steps after the answer"
