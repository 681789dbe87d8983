"""Each fault knob of the reference server, seen from outside the process."""

from __future__ import annotations

import itertools
import signal
import statistics
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from soakd.reference.harness import HttpResult, ReferenceProcess, http, reference, unit_embedding
from soakd.testing import wait_for


def store(ref: ReferenceProcess, mem_id: str, seed: int, space: str = "knobs") -> HttpResult:
    """Store one memory with its own embedding into ``space``."""
    body = {"id": mem_id, "content": f"content {mem_id}", "embedding": unit_embedding(seed)}
    return http("POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": space})


def timed(method: str, url: str, **kw: object) -> tuple[float, HttpResult]:
    """Seconds taken by one request, and its result."""
    started = time.perf_counter()
    result = http(method, url, **kw)  # type: ignore[arg-type]
    return time.perf_counter() - started, result


def at_least(seconds: float, method: str, url: str) -> tuple[float, HttpResult] | None:
    """One timed request, returned only if it took at least ``seconds``."""
    took = timed(method, url)
    return took if took[0] >= seconds else None


def generated_at(ref: ReferenceProcess, space: str = "knobs") -> float:
    """The consolidation snapshot's generated_at, as epoch seconds."""
    doc = http("GET", f"{ref.url}/api/v1/consolidations?space={space}").json()
    return datetime.fromisoformat(doc["generated_at"].replace("Z", "+00:00")).timestamp()


def test_leak_grows_rss() -> None:
    """--leak-bytes-per-store 1MB: 40 stores grow the server's RSS by at least ~32 MB."""
    with reference("--leak-bytes-per-store", "1000000") as ref:
        store(ref, "warm", 1)
        before = psutil.Process(ref.pid).memory_info().rss
        for i in range(40):
            assert store(ref, f"leak_{i}", 100 + i).status == 201
        after = psutil.Process(ref.pid).memory_info().rss
    assert after - before >= 32_000_000


def test_no_leak_by_default() -> None:
    """Without the knob, the same 40 stores grow RSS by far less than the leak would."""
    with reference() as ref:
        store(ref, "warm", 1)
        before = psutil.Process(ref.pid).memory_info().rss
        for i in range(40):
            store(ref, f"leak_{i}", 100 + i)
        after = psutil.Process(ref.pid).memory_info().rss
    assert after - before < 16_000_000


def test_latency_drift_grows_with_uptime() -> None:
    """--latency-drift get=6000 (ms/min): a GET sent >= 1.5 s after start takes >= 150 ms."""
    with reference("--latency-drift", "get=6000") as ref:
        ready = time.monotonic()
        store(ref, "drift_1", 1)
        wait_for(lambda: time.monotonic() - ready >= 1.5, timeout_s=5, what="uptime 1.5 s")
        sent = time.monotonic()
        get_s, result = timed("GET", f"{ref.url}/api/v1/memories/drift_1?space=knobs")
        assert result.status == 200
        # The server sleeps drift * uptime; its uptime is at least our time since ready.
        assert get_s >= 0.99 * (sent - ready) / 10.0  # 6000 ms/min = 0.1 s per second
        later = wait_for(
            lambda: at_least(get_s + 0.05, "GET", f"{ref.url}/api/v1/memories/drift_1?space=knobs"),
            timeout_s=10,
            what="a slower GET",
        )
        assert later is not None and later[1].status == 200


def test_stall_freezes_the_whole_loop() -> None:
    """--stall-every 1s --stall-for 700ms: even /health/alive waits out a stall."""
    with reference("--stall-every", "1s", "--stall-for", "700ms") as ref:
        slow = wait_for(
            lambda: at_least(0.3, "GET", f"{ref.url}/health/alive"),
            timeout_s=10,
            interval_s=0.05,
            what="a request caught in a stall",
        )
        assert slow is not None and slow[1].status == 200


def test_error_knob_status_and_envelope() -> None:
    """--error-rate store=1 --error-status store=503: every store is 503, other ops are not."""
    with reference("--error-rate", "store=1.0", "--error-status", "store=503") as ref:
        result = store(ref, "err_1", 1)
        assert result.status == 503
        assert result.json()["error"]["code"] == "MEMORY_CLUSTER_UNAVAILABLE"
        assert "Retry-After" in result.headers
        recall = http("GET", f"{ref.url}/api/v1/memories/recall?query=x")
        assert recall.status == 200


def test_error_rate_is_a_fraction() -> None:
    """--error-rate 0.5 (via env) fails about half of the recalls, with status 500."""
    env = {"ENGRAM_REF_ERROR_RATE": "recall=0.5", "ENGRAM_REF_SEED": "7"}
    with reference(env=env) as ref:
        statuses = [
            http("GET", f"{ref.url}/api/v1/memories/recall?query=x").status for _ in range(100)
        ]
    assert set(statuses) == {200, 500}
    assert 25 <= statuses.count(500) <= 75


def test_crash_after_ops_by_sigkill(tmp_path: Path) -> None:
    """--crash-after-ops 5: the 5th operation kills the process by SIGKILL, PID file left."""
    pid_file = tmp_path / "engram.pid"
    with reference("--crash-after-ops", "5", "--pid-file", str(pid_file)) as ref:
        for i in range(4):
            assert store(ref, f"c_{i}", i).status == 201
        with pytest.raises(OSError):
            store(ref, "c_5", 5)
        assert ref.wait(10) == -signal.SIGKILL
    assert pid_file.exists()


def test_crash_after_time_by_sigsegv() -> None:
    """--crash-after 2s --crash-signal SEGV: the process dies of SIGSEGV on its own."""
    # 2 s leaves the harness time to see the server up, even on a busy machine.
    with reference("--crash-after", "2s", "--crash-signal", "SEGV") as ref:
        assert ref.wait(15) == -signal.SIGSEGV


def test_crash_by_sigabrt_from_env() -> None:
    """The crash knobs also come from the environment (SIGABRT at the first operation)."""
    env = {"ENGRAM_REF_CRASH_AFTER_OPS": "1", "ENGRAM_REF_CRASH_SIGNAL": "ABRT"}
    with reference(env=env) as ref:
        with pytest.raises(OSError):
            http("GET", f"{ref.url}/api/v1/memories/any")
        assert ref.wait(15) == -signal.SIGABRT


def run_gaps(ref: ReferenceProcess, count: int) -> list[float]:
    """Seconds between the next ``count + 1`` distinct generated_at values."""
    seen = [generated_at(ref)]

    def next_run() -> bool:
        value = generated_at(ref)
        if value != seen[-1]:
            seen.append(value)
        return len(seen) > count + 1

    wait_for(next_run, timeout_s=30, interval_s=0.03, what=f"{count + 1} consolidation runs")
    return [b - a for a, b in itertools.pairwise(seen[1:])]


@pytest.mark.slow
@pytest.mark.timing  # bounds on measured gaps between runs
def test_consolidation_interval_and_jitter() -> None:
    """Runs come every --consolidation-interval; --consolidation-jitter spreads the gaps."""
    with reference("--consolidation-interval", "400ms", "--seed", "5") as ref:
        store(ref, "cons_1", 1)
        steady = run_gaps(ref, 5)
    with reference(
        "--consolidation-interval", "400ms", "--consolidation-jitter", "150ms", "--seed", "5"
    ) as ref:
        store(ref, "cons_1", 1)
        jittered = run_gaps(ref, 5)
    assert statistics.median(steady) == pytest.approx(0.4, abs=0.15)
    assert max(steady) - min(steady) < max(jittered) - min(jittered)
    assert all(0.4 - 0.3 - 0.1 <= gap <= 0.4 + 0.3 + 0.3 for gap in jittered)


def test_consolidation_stall_stops_refreshing() -> None:
    """--consolidation-stall-after 1s: generated_at moves at first, then never after 1 s."""
    with reference("--consolidation-interval", "200ms", "--consolidation-stall-after", "1s") as ref:
        store(ref, "stall_1", 1)
        # The server's own start (wall clock), from the uptime it reports.
        started = time.time() - http("GET", f"{ref.url}/health").json()["uptime_seconds"]
        run_gaps(ref, 1)
        wait_for(lambda: time.time() - started > 1.8, timeout_s=10, what="uptime 1.8 s")
        last = generated_at(ref)
        # The last refresh happened before the stall point (one interval + slack).
        assert last <= started + 1.0 + 0.2 + 0.3
        assert all(generated_at(ref) == last for _ in range(5))


def test_stock_mode_spread_500_and_frozen_snapshot() -> None:
    """--stock: valid SPREADs are 500 MEMORY_SYSTEM_ERROR; the first snapshot is kept forever."""
    with reference("--stock", "--consolidation-interval", "200ms") as ref:
        http("POST", f"{ref.url}/api/v1/spaces", {"id": "knobs"})
        first = http("GET", f"{ref.url}/api/v1/consolidations?space=knobs").json()
        store(ref, "stock_1", 1)
        spread = http(
            "POST",
            f"{ref.url}/api/v1/query",
            {"query_text": "SPREAD FROM stock_1", "memory_space_id": "knobs"},
        )
        assert spread.status == 500
        assert spread.json()["error"]["code"] == "MEMORY_SYSTEM_ERROR"
        too_deep = http(
            "POST",
            f"{ref.url}/api/v1/query",
            {"query_text": "SPREAD FROM stock_1 MAX_HOPS 7", "memory_space_id": "knobs"},
        )
        assert too_deep.status == 400
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > 0.8, timeout_s=5, what="several intervals")
        again = http("GET", f"{ref.url}/api/v1/consolidations?space=knobs").json()
    assert again == first and first["beliefs"] == []


def test_write_loss_fraction_read_back() -> None:
    """--write-loss 0.5: every store is 201, but about half read back 404."""
    with reference("--write-loss", "0.5", "--seed", "3") as ref:
        assert all(store(ref, f"wl_{i}", 1000 + i).status == 201 for i in range(80))
        found = [
            http("GET", f"{ref.url}/api/v1/memories/wl_{i}?space=knobs").status for i in range(80)
        ]
    assert set(found) == {200, 404}
    assert 20 <= found.count(404) <= 60


def test_bad_knob_value_exits_2() -> None:
    """A malformed knob value is a usage error: exit status 2 with a message."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "soakd.reference", "--port", "0", "--error-rate", "store=2"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and b"--error-rate" in proc.stderr
