"""The exporter scraped 100 times a second must not disturb the schedule.

Two soaks at 500 ops/s run one after the other (side by side, with their
two reference targets, they saturate this 2-core box and measure only that):
one left alone, then one with four threads in this process scraping its
/metrics 100 times a second in all. Schedule lag (actual send minus intended send) comes from
the run store's per-interval lag histograms. Timing on a shared 2-core machine
is noisy (load averages of 20 were seen while this was written), so the test
asserts that the scrapes really happened and that the scraped run's lag p99
is under a generous bound or, on a box too loaded for any bound, within 3x
of its quiet twin's (a storm that stalled soakd's loop fails both). The
measured figures are in docs/reliability.md (``pytest -s`` prints them).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from soakd.model import Op
from soakd.stats import merge_blobs
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec, wait_for

#: The ``spawn`` fixture of conftest.py: ``spawn(args, stderr_file) -> Popen``.
Spawn = Callable[..., "subprocess.Popen[bytes]"]
SCRAPES_PER_S = 100
SCRAPERS = 4
#: Generous: the scheduler's own lag p99 is ~1-2 ms on an idle machine (field
#: notes); this catches a scrape storm that stalls the event loop, not noise.
LAG_P99_BOUND_MS = 50.0
# A bound on schedule-lag P99: `timing`, run alone in `make test`'s serial phase.
pytestmark = [pytest.mark.timeout(180), pytest.mark.timing]


def _metrics_address(stderr: Path) -> str | None:
    for line in stderr.read_text().splitlines():
        if '"metrics_listening"' in line:
            return str(json.loads(line)["address"])
    return None


def _lag(state: Path) -> dict[str, tuple[float, float, int]]:
    """Per operation: lag p99 and max in ms, and the number of requests."""
    store = RunStore.open(state, readonly=True)
    try:
        out = {}
        for op in (Op.STORE, Op.RECALL, Op.SPREAD):
            hist = merge_blobs(r.lag_hist for r in store.intervals(op))
            out[op.value] = (hist.percentile_ms(99), hist.max_ms(), hist.count)
        return out
    finally:
        store.close()


class Scraper:
    """Threads that GET a URL at a fixed total rate until stopped; counts good answers."""

    def __init__(self, url: str, rate: float, threads: int) -> None:
        self.url, self.period = url, threads / rate
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    good = resp.status == 200 and b"soakd_" in resp.read()
            except OSError:
                good = False
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
            # Fixed rate, but no catch-up burst after a slow answer: skip the
            # missed slots instead.
            next_t = max(next_t + self.period, time.monotonic())
            self._stop.wait(max(0.0, next_t - time.monotonic()))


@pytest.mark.slow
def test_scrape_storm_leaves_the_schedule_undisturbed(tmp_path: Path, spawn: Spawn) -> None:
    """100 scrapes/s during a 500 ops/s soak: lag p99 within the bound, like the quiet twin's."""
    states: dict[str, tuple[Path, Path]] = {}
    scraper: Scraper | None = None
    scraped_for = 0.0
    for name in ("quiet", "scraped"):
        spec = tmp_path / f"{name}.yaml"
        text = soak_spec(
            free_port(),
            duration="15s",
            store=300,
            recall=150,
            spread=50,
            spaces=4,
            consolidation_interval=None,
            extra="sampling: {stats_interval: 1s}",
            # Enough connections that lag measures soakd's loop more than a
            # wait for a connection to a busy target.
        ).replace("target:\n", "target:\n  max_connections: 256\n")
        spec.write_text(text)
        state, err = tmp_path / name, tmp_path / f"{name}.stderr"
        states[name] = (state, err)
        proc = spawn(["run", str(spec), "--state-dir", str(state)], err)
        if name == "scraped":
            address = wait_for(lambda e=err: _metrics_address(e), timeout_s=60, what="exporter")  # type: ignore[misc]
            scraper = Scraper(f"http://{address}/metrics", SCRAPES_PER_S, SCRAPERS)
            started = time.monotonic()
            scraper.start()
            try:
                # Scrape while the run runs: once it ends, its exporter goes away.
                wait_for(
                    lambda e=err: '"run_ending"' in e.read_text(),  # type: ignore[misc]
                    timeout_s=120,
                    interval_s=0.2,
                    what="the scraped run to end",
                )
            finally:
                scraper.stop()
            scraped_for = time.monotonic() - started
        proc.wait(timeout=120)
        assert proc.returncode in (0, 1), err.read_text()[-3000:]
    assert scraper is not None

    lag = {name: _lag(state) for name, (state, _) in states.items()}
    print(f"\nscrapes ok={scraper.ok} failed={scraper.failed} in {scraped_for:.1f}s", end=" ")
    print(f"({scraper.ok / scraped_for:.0f}/s answered)")
    for name, ops in lag.items():
        for op, (p99, worst, n) in ops.items():
            print(f"{name:8s} {op:7s} lag p99 {p99:7.2f} ms  max {worst:8.2f} ms  n={n}")
    # The storm really happened. On an idle box all 100/s are answered; on a
    # loaded one each answer waits for soakd's loop, so ask for a floor only.
    assert scraper.ok >= 10 * scraped_for, (scraper.ok, scraped_for)
    for name, ops in lag.items():
        for op, (_p99, _worst, n) in ops.items():
            assert n > 0, (name, op)
    for op, (p99, _worst, _n) in lag["scraped"].items():
        # Under the bound, or not slower than the quiet twin by more than 3x:
        # a loaded CI box delays both runs; a storm that stalled soakd's
        # loop would delay the scraped run alone.
        quiet_p99 = lag["quiet"][op][0]
        assert p99 < max(LAG_P99_BOUND_MS, 3 * quiet_p99), (op, p99, quiet_p99)
