"""What building one request costs: soakd.workload's part pools against the old path.

The old path (soakd before the part pools) drew 768 uniform int16 per request,
normalised them (``unit_vector``) and printed them with ``%.6g``
(``format_floats``). The content's eight words came from a ``random.Random``
seeded per k. It is rebuilt here from the same helpers. The new path
concatenates three pre-printed parts from the run's pool
(soakd/workload.py's module docstring).

Printed, best of 5 (the box is shared, so the minimum is the figure to quote):

* us per store body: the embedding alone (old: draw and print; new: pick and
  concatenate), and the whole ``Workload.store`` (content, checksum, JSON, request);
* us per recall query string (by embedding);
* the pool: build time (first in the process, then derived for another run) and
  its memory (tracemalloc, and the sizes of its strings).

Usage: .venv/bin/python bench/workload_bodies.py   (takes ~15 s)
"""

from __future__ import annotations

import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.workload import (
    POOL_SIZE,
    Workload,
    checksum,
    clear_pool_cache,
    format_floats,
    part_pool,
    plain_number,
    space_names,
    unit_vector,
)

SEED, TAG = 42, "bench"
_WORDS = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "glacier", "harbor",
    "island", "juniper", "kelp", "lagoon", "meadow", "nebula", "orchard", "prairie",
    "quartz", "river", "summit", "tundra", "umber", "valley", "willow", "xenon",
    "yarrow", "zephyr", "canyon", "dune", "estuary", "forest", "grove", "heath",
)  # fmt: skip


def old_store_body(w: Workload, k: int) -> bytes:
    """``Workload.store(k).body`` as soakd built it before the part pools."""
    import json

    space = w.spaces[k % len(w.spaces)]
    rnd = random.Random(f"{w.seed}:1:{k}:words")
    words = " ".join(rnd.choice(_WORDS) for _ in range(8))
    body = f"soak k={k} seed={w.seed} tag={w.tag} {words}"
    content = f"{body} sha={checksum(body)}"
    vec = unit_vector(f"{w.seed}:1:{k}")
    return (
        f'{{"id":"{w.memory_id(k)}","content":{json.dumps(content)},'
        f'"embedding":[{format_floats(vec)}],"memory_space_id":{json.dumps(space)}}}'
    ).encode()


def old_recall_query(w: Workload, k: int) -> str:
    opts = w.recall_options
    common = f"max_results={opts.max_results}&threshold={plain_number(opts.threshold)}"
    vec = unit_vector(f"{w.seed}:2:{k}")
    return f"embedding=%5B{format_floats(vec)}%5D&{common}"


def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    """Best of 5 runs of ``calls`` calls over distinct k, in microseconds per call."""
    best = float("inf")
    for rep in range(5):
        ks = range(rep * calls, (rep + 1) * calls)
        start = time.perf_counter()
        for k in ks:
            fn(k)
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def pool_costs() -> tuple[float, float, float, float, float]:
    """Seconds to build the first pool and to derive another; MB held, peak, and in strings."""
    clear_pool_cache()
    start = time.perf_counter()
    part_pool(SEED + 1, TAG)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    part_pool(SEED + 2, TAG)
    derived_s = time.perf_counter() - start
    clear_pool_cache()  # measure a build from the base: its peak is the larger one
    tracemalloc.start()
    pool = part_pool(SEED, TAG)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    strings = sys.getsizeof(pool.texts) + sum(sys.getsizeof(t) for t in pool.texts)
    return first_s, derived_s, held / 1e6, peak / 1e6, strings / 1e6


def main() -> None:
    print(f"# workload bodies  load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    first_s, derived_s, held_mb, peak_mb, strings_mb = pool_costs()
    w = Workload(SEED, TAG, space_names(10), RecallOptions(), SpreadOptions())
    texts = w.pool.texts

    def new_embedding(k: int) -> str:
        a, b, c = w.part_indices(k)
        return f"{texts[a]},{texts[b]},{texts[c]}"

    rows = [
        ("store: embedding only", lambda k: format_floats(unit_vector(f"1:{k}")), new_embedding),
        ("store: whole body", lambda k: old_store_body(w, k), w.store),
        ("recall: query string", lambda k: old_recall_query(w, k), w.recall),
    ]
    print(f"{'us per request':24} {'old':>8} {'new':>8} {'speed-up':>9}")
    for name, old, new in rows:
        old_us, new_us = per_call_us(old, 300), per_call_us(new, 30_000)
        print(f"{name:24} {old_us:8.1f} {new_us:8.2f} {old_us / new_us:8.0f}x")
    print(f"store body {len(w.store(1).body)} B; recall query {len(w.recall(1).query_string)} B")
    print(f"pool: {POOL_SIZE} parts; first build {first_s:.2f} s, derived {derived_s * 1e3:.0f} ms")
    print(
        f"pool memory (tracemalloc): {held_mb:.1f} MB held, {peak_mb:.1f} MB peak while"
        f" building; its strings {strings_mb:.1f} MB"
    )


if __name__ == "__main__":
    main()
