"""The reference server's knobs for the real server's behaviours (issue 17), from outside.

Slow space creation, a file-backed mapping per space (RssFile, not heap),
anonymous growth per store, and saturation: each seen through HTTP and
/proc/PID/status of the real child process.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from soakd.reference.harness import ReferenceProcess, http, reference, unit_embedding
from soakd.sampler import read_status_memory
from soakd.testing import wait_for

MIB = 1024 * 1024


def create(ref: ReferenceProcess, space: str) -> tuple[float, int]:
    """Seconds ``POST /api/v1/spaces`` took for ``space``, and its status."""
    started = time.perf_counter()
    status = http("POST", f"{ref.url}/api/v1/spaces", {"id": space}, timeout_s=60).status
    return time.perf_counter() - started, status


def store(ref: ReferenceProcess, i: int, space: str = "knobs") -> float:
    """Seconds one store took (asserting its 201)."""
    body = {"id": f"m{i}", "content": f"content {i}", "embedding": unit_embedding(i)}
    started = time.perf_counter()
    result = http(
        "POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": space}, 60
    )
    assert result.status == 201
    return time.perf_counter() - started


def timed_recall(ref: ReferenceProcess) -> float:
    started = time.perf_counter()
    result = http("GET", f"{ref.url}/api/v1/memories/recall?query=content&space=knobs")
    assert result.status == 200
    return time.perf_counter() - started


def stores_at_once(ref: ReferenceProcess, n: int) -> tuple[list[float], float]:
    """Seconds each of ``n`` stores sent at once took (sorted), and a recall sent with them."""
    with ThreadPoolExecutor(n + 1) as pool:
        stores = [pool.submit(store, ref, i) for i in range(1, n + 1)]
        recall = pool.submit(timed_recall, ref)
        return sorted(f.result() for f in stores), recall.result()


def status_of(pid: int) -> dict[str, int]:
    got = read_status_memory(Path(f"/proc/{pid}/status"))
    assert got is not None
    return got


def test_slow_space_creation_two_at_a_time_and_existing_at_once() -> None:
    """--space-create-time 1s: four new spaces at once take >= 2 s (two at a time),
    each >= 1 s; asking again for an existing one answers at once."""
    with reference("--space-create-time", "1s", "--space-create-parallel", "2") as ref:
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda s: create(ref, s), ["sp_a", "sp_b", "sp_c", "sp_d"]))
        total = time.perf_counter() - started
        assert all(status == 201 for _, status in results)
        assert min(took for took, _ in results) >= 0.95
        assert total >= 1.95
        again, status = create(ref, "sp_a")
        assert status == 201 and again < 0.5
        listed = {s["id"] for s in http("GET", f"{ref.url}/api/v1/spaces").json()["spaces"]}
        assert {"sp_a", "sp_b", "sp_c", "sp_d"} <= listed


def test_file_map_inflates_rss_file_not_anon(tmp_path: Path) -> None:
    """--file-map-size 192M: three spaces make RssFile >= 3 x 192 MiB; RssAnon stays small."""
    with reference("--file-map-size", "192M", "--data-dir", str(tmp_path)) as ref:
        before = status_of(ref.pid)
        for space in ("sp_1", "sp_2"):  # plus the default space
            assert create(ref, space)[1] == 201
        wait_for(
            lambda: status_of(ref.pid)["file"] >= 3 * 192 * MIB,
            timeout_s=60,
            what="three mapped files resident",
        )
        after = status_of(ref.pid)
        assert after["anon"] - before["anon"] < 64 * MIB
        # sparse: the files take (almost) no disk
        files = list(tmp_path.glob("*/warm_tier.dat"))
        assert len(files) == 3
        assert sum(f.stat().st_blocks * 512 for f in files) < MIB


def test_file_map_fill_time_makes_rss_file_grow_gradually(tmp_path: Path) -> None:
    """--file-map-fill-time 4s: RssFile passes through a partly filled state on its way up
    to the whole mapping (growing page cache, as a real server's warm tier)."""
    size = 128 * MIB
    with reference(
        "--file-map-size", "128M", "--file-map-fill-time", "4s", "--data-dir", str(tmp_path)
    ) as ref:
        wait_for(
            lambda: status_of(ref.pid)["file"] >= size,
            timeout_s=60,
            what="the default space's mapping read",
        )
        base = status_of(ref.pid)["file"]
        assert create(ref, "sp_fill")[1] == 201
        wait_for(
            lambda: 0.1 * size < status_of(ref.pid)["file"] - base < 0.9 * size,
            timeout_s=30,
            interval_s=0.05,
            what="the new space's mapping partly read",
        )
        wait_for(
            lambda: status_of(ref.pid)["file"] - base >= 0.95 * size,
            timeout_s=60,
            what="the whole mapping read",
        )


def test_leak_per_store_is_anonymous_memory() -> None:
    """--leak-bytes-per-store 1000000: 40 stores grow RssAnon by >= 32 MB, RssFile barely."""
    with reference("--leak-bytes-per-store", "1000000") as ref:
        store(ref, 0)
        before = status_of(ref.pid)
        for i in range(1, 41):
            store(ref, i)
        after = status_of(ref.pid)
    assert after["anon"] - before["anon"] >= 32_000_000
    assert after["file"] - before["file"] < 8 * MIB


@pytest.mark.timing
def test_service_time_queues_one_operation_only() -> None:
    """--service-ms store=100: ten stores at once finish one after another (the last
    waits ~1 s); a recall meanwhile is not held."""
    with reference("--service-ms", "store=100") as ref:
        store(ref, 0)
        took, recall_s = stores_at_once(ref, 10)
        assert took[-1] >= 0.9  # ten in a row at 100 ms each
        assert took[0] < took[-1] / 2  # not all equally slow: a queue
        assert recall_s < 0.5


def _abandon_store(ref: ReferenceProcess, i: int) -> None:
    """A store whose client gives up after 50 ms (and closes its connection)."""
    with contextlib.suppress(OSError):  # the timeout (socket.timeout, URLError)
        http(
            "POST",
            f"{ref.url}/api/v1/memories/remember",
            {"id": f"a{i}", "content": f"c {i}", "embedding": unit_embedding(i)},
            {"X-Memory-Space": "knobs"},
            timeout_s=0.05,
        )


def test_abandoned_requests_keep_their_place_in_the_queue() -> None:
    """--service-ms store=200: five stores whose clients gave up are still served (aiohttp
    does not cancel a handler whose client went away), so the next store waits for all
    five (~1 s), as the real Engram went on with an overloaded step's abandoned stores."""
    with reference("--service-ms", "store=200") as ref:
        store(ref, 0)
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda i: _abandon_store(ref, i), range(1, 6)))
        took = store(ref, 99)
    assert took >= 0.7, took


def test_work_ms_holds_each_operation_and_latency_scale_stretches_it() -> None:
    """--work-ms recall=50 --latency-scale 1.2: every recall takes >= 60 ms (50 ms of work,
    stretched by 1.2); stores are not held (the fastest of ten well under 50 ms)."""
    with reference("--work-ms", "recall=50", "--latency-scale", "1.2") as ref:
        stores = [store(ref, i) for i in range(10)]
        recalls = [timed_recall(ref) for _ in range(10)]
    assert min(recalls) >= 0.06, recalls
    assert min(stores) < 0.025, stores


@pytest.mark.timing
def test_sustain_takes_a_burst_then_queues_at_the_sustained_rate() -> None:
    """--sustain store=10 --burst store=10: of 30 stores sent at once, about ten are served
    at once (the burst), the rest at 10/s: the last waits ~2 s. A recall meanwhile is not
    held, and a store after the bucket refilled is prompt again."""
    with reference("--sustain", "store=10", "--burst", "store=10") as ref:
        store(ref, 0)
        took, recall_s = stores_at_once(ref, 30)
        assert took[-1] >= 1.2, took  # ~20 paid for at 10/s
        assert took[8] < took[-1] / 3, took  # the burst went through at once: not a queue
        assert recall_s < 0.5
        wait_for(
            lambda: store(ref, 99) < 0.05, timeout_s=10, interval_s=0.5, what="a refilled bucket"
        )
