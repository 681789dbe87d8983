"""Shared helpers for the comparison benchmarks (bench/compare_*.py, co_stall, longrun, plan).

What lives here: the machine header every script prints (load average next to every
figure: the box is shared), a throw-away nginx serving a tiny static JSON on 127.0.0.1
(the target when the reference server would be the bottleneck), psutil sampling of a
process's CPU seconds and RSS from outside, percentiles over plain lists, a
bounded child-process runner, and soakd's measured path as a child driver
(``python bench/common.py soakd-fixed ...``; soakd is imported only there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
#: The static body nginx serves: about the size of a small Engram answer.
STATIC_BODY = b'{"status":"ok","memories":{},"n":1}\n'
STATIC_PATH = "/data.json"


def load_avg() -> str:
    """The 1/5/15-minute load average as ``a b c``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_header(title: str) -> str:
    """One comment line naming the script, Python, CPU count and the load right now."""
    return (
        f"# {title} | python {sys.version.split()[0]} | {os.cpu_count()} CPUs | "
        f"loadavg {load_avg()} | {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for tools without port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank over an already sorted sequence."""
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, round(q / 100.0 * len(values) + 0.5) - 1))
    return float(values[rank])


def wait_http(url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200, at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s: {last!r}")


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10
) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; a no-op for a process that already ended."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


@dataclass(frozen=True)
class NginxServer:
    """A running throw-away nginx: its URL for the static JSON and its processes."""

    url: str
    port: int
    master: subprocess.Popen[bytes]
    prefix: Path

    def cpu_seconds(self) -> float:
        """User+system CPU of master and workers so far."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.master.pid)
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total


_NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {prefix}/www;
        location = /data.json {{ default_type application/json; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(workers: int = 1, timeout_s: float = 15.0) -> Iterator[NginxServer]:
    """nginx (Debian's binary) serving STATIC_BODY at STATIC_PATH on 127.0.0.1; stopped on exit.

    One worker by default: on a 2-core box the load generator needs the other core,
    and one nginx worker serves this file far faster than any generator here asks.
    """
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = Path(tempfile.mkdtemp(prefix="b8-nginx-", dir="/var/tmp"))
    (prefix / "www").mkdir()
    (prefix / "tmp").mkdir()
    (prefix / "www" / STATIC_PATH.lstrip("/")).write_bytes(STATIC_BODY)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(workers=workers, prefix=prefix, port=port))
    master = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = NginxServer(f"http://127.0.0.1:{port}{STATIC_PATH}", port, master, prefix)
    try:
        wait_http(server.url, timeout_s)
        yield server
    finally:
        # SIGQUIT would wait for keep-alive connections; SIGTERM is nginx's fast stop.
        stop_process(master)
        shutil.rmtree(prefix, ignore_errors=True)


@dataclass(frozen=True)
class ProcSample:
    """One look at a process from outside."""

    t: float  # seconds since the watch started
    cpu_s: float  # user + system CPU seconds so far (the process alone)
    rss_bytes: int
    load1: float


class ProcWatch:
    """Samples one process's CPU seconds and RSS (psutil, from outside)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.t0 = time.monotonic()
        self.samples: list[ProcSample] = []

    def sample(self) -> ProcSample:
        t = self.proc.cpu_times()
        s = ProcSample(
            time.monotonic() - self.t0,
            t.user + t.system,
            self.proc.memory_info().rss,
            os.getloadavg()[0],
        )
        self.samples.append(s)
        return s


def rss_bytes() -> int:
    """This process's resident set size right now."""
    return int(psutil.Process().memory_info().rss)


def cpu_seconds_self() -> float:
    """This process's user+system CPU seconds so far (all threads)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def mib(n: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{n / 1048576:.1f}"


# -- soakd's measured path, as a child process ----------------------------------------------
#
# Every comparison runs each tool in its own process, so CPU seconds and RSS are the
# tool's alone (Locust monkey-patches the whole interpreter with gevent; it must never
# share a process with soakd). ``python bench/common.py soakd-fixed ...`` runs soakd's
# real hot path — Sender -> EngramClient.begin -> (answer callback) StatsHub.on_result
# + Exporter.on_result — under uvloop and prints one JSON line of figures.


@dataclass(frozen=True)
class ToolResult:
    """One tool's figures for one measured run (the JSON a child prints)."""

    tool: str
    rate: float  # offered (target) rate; 0 for closed-loop max-rate runs
    duration_s: float
    issued: int
    ok: int
    errors: int
    dropped: int  # soakd: arrivals dropped at max_in_flight; Locust: arrivals never sent
    late: int  # lag > 10 ms
    window_ratios: list[float]  # achieved/target per window (ok completions in the window)
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    resp_p50_ms: float
    resp_p99_ms: float
    resp_max_ms: float
    cpu_s: float  # the tool's user+system CPU over the measured run (after warm-up)
    rss_bytes: int  # at the end
    maxrss_bytes: int
    extra: dict[str, float]

    @property
    def achieved_ratio(self) -> float:
        return self.ok / (self.rate * self.duration_s) if self.rate else 0.0

    @property
    def cpu_s_per_1000(self) -> float:
        """CPU seconds per 1,000 requests."""
        return 1000.0 * self.cpu_s / self.issued if self.issued else 0.0


def run_child(cmd: list[str], timeout_s: float) -> ToolResult:
    """Run a child driver, bounded in time; parse the JSON line it prints last."""
    import json

    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=str(REPO)
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {cmd[:4]} failed (rc {proc.returncode}): {proc.stderr[-3000:]}")
    doc = json.loads(lines[-1])
    return ToolResult(**doc)


def _soakd_fixed(argv: list[str]) -> int:
    """Child: soakd's hot path at a fixed rate against ``--url``; prints a ToolResult."""
    import argparse
    import asyncio
    import dataclasses
    import functools
    import json
    import resource

    import uvloop
    from yarl import URL

    sys.path.insert(0, str(REPO))
    from soakd.clock import SystemClock
    from soakd.engram import EngramClient, Exchange
    from soakd.exporter import Exporter
    from soakd.model import Op, OpResult, Outcome
    from soakd.scheduler import NS_PER_S, Sender
    from soakd.stats import StatsHub

    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--max-in-flight", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--record", default="", help="write 'intended_ns done_ns ok' (monotonic)")
    a = p.parse_args(argv)
    url = URL(a.url)
    base = f"{url.scheme}://{url.host}:{url.port}"
    path_qs = url.raw_path_qs

    async def main() -> ToolResult:
        clock = SystemClock()
        client = EngramClient(
            base, clock=clock, timeout_s=a.timeout, max_connections=a.max_in_flight
        )
        exporter = Exporter(run_id="bench", target=base, status=dict)
        hub = StatsHub([Op.RECALL], clock)
        nwin = max(1, int(a.duration // a.window))
        windows = [0] * nwin
        win_ns = int(a.window * NS_PER_S)
        rec: list[tuple[int, int, int]] = []
        state = {"start": 0, "measure": False}

        def answered(intended_ns: int, ex: Exchange) -> None:
            ok = ex.failure is None and ex.status == 200
            r = OpResult(
                Op.RECALL, "bench", intended_ns, ex.sent_ns, ex.done_ns,
                Outcome.OK if ok else (ex.failure or Outcome.HTTP_ERROR), status=ex.status,
            )  # fmt: skip
            hub.on_result(r)
            exporter.on_result(r)
            if state["measure"]:
                w = (ex.done_ns - state["start"]) // win_ns
                if ok and 0 <= w < nwin:
                    windows[w] += 1
                if a.record:
                    rec.append((intended_ns, ex.done_ns, int(ok)))

        def fire(k: int, intended_ns: int) -> asyncio.Future[None]:
            # The daemon's path: no task per request; the answer is recorded from
            # the connection's callback.
            return client.begin("GET", path_qs, then=functools.partial(answered, intended_ns))

        def make(name: str) -> Sender:
            return Sender(
                name, a.rate, clock=clock, fire=fire, max_in_flight=a.max_in_flight,
                on_dropped=lambda k, t: hub.on_dropped(Op.RECALL, t),
                on_late=lambda k, t: hub.on_late(Op.RECALL),
            )  # fmt: skip

        async with client:
            if a.warmup > 0:
                warm = make("warmup")
                t = clock.monotonic_ns() + 10_000_000
                await warm.run(t, until_ns=t + int(a.warmup * NS_PER_S))
                await warm.drain(a.timeout)
            hub.roll()  # the warm-up's figures go into an interval we never read
            hub = StatsHub([Op.RECALL], clock)
            sched = make("measured")
            cpu0 = cpu_seconds_self()
            start = clock.monotonic_ns() + 10_000_000
            state["start"], state["measure"] = start, True
            await sched.run(start, until_ns=start + int(a.duration * NS_PER_S))
            await sched.drain(a.timeout + 1)
            cpu = cpu_seconds_self() - cpu0
        tot = hub.totals(Op.RECALL)
        if a.record:
            text = "".join(f"{i} {d} {o}\n" for i, d, o in rec)
            await asyncio.to_thread(Path(a.record).write_text, text)
        target = a.rate * a.window
        return ToolResult(
            tool="soakd", rate=a.rate, duration_s=a.duration, issued=sched.issued,
            ok=tot.ok, errors=tot.count - tot.ok, dropped=sched.dropped, late=sched.late,
            window_ratios=[w / target for w in windows],
            lag_p50_ms=tot.lag.p50_ms, lag_p99_ms=tot.lag.p99_ms, lag_max_ms=tot.lag.max_ms,
            resp_p50_ms=tot.latency.p50_ms, resp_p99_ms=tot.latency.p99_ms,
            resp_max_ms=tot.latency.max_ms, cpu_s=cpu, rss_bytes=rss_bytes(),
            maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            extra={"service_p99_ms": tot.service.p99_ms, "service_p50_ms": tot.service.p50_ms},
        )  # fmt: skip

    result = uvloop.run(main())
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


def soakd_fixed_cmd(url: str, rate: float, duration_s: float, **opts: object) -> list[str]:
    """The command line of the soakd child driver."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "soakd-fixed", "--url", url,
           "--rate", str(rate), "--duration", str(duration_s)]  # fmt: skip
    for key, value in opts.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "soakd-fixed":
        sys.exit(_soakd_fixed(sys.argv[2:]))
    sys.exit("usage: common.py soakd-fixed --url URL --rate R [--duration S] ...")
