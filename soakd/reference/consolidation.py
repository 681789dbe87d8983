"""Consolidation: a real pass over recent memories, per space, on its own schedule.

A pass replays the space's most recent memories, groups them into patterns
(greedy clustering by cosine >= 0.6, estimated from the sign codes; what is left
is grouped in temporal runs of up to 8, the way episodes of one session
consolidate together), and publishes a snapshot whose ``generated_at`` changes
only when a pass runs. The scheduler aims at ``t0 + k * interval`` (absolute, no
cumulative drift) plus a uniform jitter, and can be told to stop refreshing after
some uptime (a stalled consolidator). Each space gets a small random phase so
that spaces created together do not all run in the same loop iteration. In
stock mode there is no scheduler: the first request for a space builds a
snapshot that is cached forever, as the real server does today.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from soakd.reference.config import ConsolidationConfig
from soakd.reference.space import Memory, MemorySpace
from soakd.reference.timing import sleep_until

CLUSTER_COSINE = 0.6
# Hamming distance over 512 bits expected at CLUSTER_COSINE (angle / pi of the bits).
_CLUSTER_BITS = round(512 * math.acos(CLUSTER_COSINE) / math.pi)
TEMPORAL_RUN = 8
MAX_BELIEFS = 20

log = structlog.get_logger()


def rfc3339(ts: float) -> str:
    """RFC 3339 UTC timestamp with microseconds and a 'Z'."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def confidence_info(value: float, reasoning: str) -> dict[str, Any]:
    """Engram's ConfidenceInfo object."""
    category = "High" if value > 0.7 else "Medium" if value > 0.4 else "Low"
    return {"value": round(value, 6), "category": category, "reasoning": reasoning}


@dataclass
class RunStats:
    """Cumulative statistics of a space's consolidation runs."""

    total_replays: int = 0
    successful_consolidations: int = 0
    failed_consolidations: int = 0
    total_patterns_extracted: int = 0
    average_replay_speed: float = 0.0
    avg_ripple_frequency: float = 0.0
    avg_ripple_duration: float = 0.0
    last_replay_timestamp: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``stats`` object of a snapshot."""
        last = self.last_replay_timestamp
        return {
            "total_replays": self.total_replays,
            "successful_consolidations": self.successful_consolidations,
            "failed_consolidations": self.failed_consolidations,
            "average_replay_speed": self.average_replay_speed,
            "total_patterns_extracted": self.total_patterns_extracted,
            "avg_ripple_frequency": self.avg_ripple_frequency,
            "avg_ripple_duration": self.avg_ripple_duration,
            "last_replay_timestamp": rfc3339(last) if last is not None else None,
        }


@dataclass
class Snapshot:
    """The published consolidation snapshot of a space."""

    generated_at: float
    beliefs: list[dict[str, Any]] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        """Engram's ConsolidationSummaryResponse."""
        return {
            "generated_at": rfc3339(self.generated_at),
            "beliefs": self.beliefs,
            "stats": self.stats.to_json(),
        }


def consolidate(space: MemorySpace, snapshot: Snapshot, window: int, now: float) -> int:
    """Run one pass over the space's recent memories into ``snapshot``; return patterns."""
    started = time.perf_counter()
    recent = space.recent_memories(window)
    groups = _cluster(space, recent)
    patterns = [g for g in groups if len(g) >= 2]
    stats = snapshot.stats
    stats.total_replays += len(recent)
    stats.successful_consolidations += len(patterns)
    stats.failed_consolidations += len(groups) - len(patterns)
    stats.total_patterns_extracted += len(patterns)
    elapsed = max(time.perf_counter() - started, 1e-6)
    stats.average_replay_speed = round(len(recent) / elapsed, 3)
    stats.avg_ripple_frequency = 150.0 + 100.0 * random.random()
    stats.avg_ripple_duration = round(elapsed * 1000.0, 3)
    stats.last_replay_timestamp = now
    new_beliefs = [_belief(space, g, now) for g in patterns]
    snapshot.beliefs = (new_beliefs + snapshot.beliefs)[:MAX_BELIEFS]
    snapshot.generated_at = now
    snapshot.runs += 1
    return len(patterns)


def _cluster(space: MemorySpace, recent: list[Memory]) -> list[list[Memory]]:
    """Leader clustering by cosine, then temporal runs of the singletons."""
    if not recent:
        return []
    slots = np.array([m.slot for m in recent], dtype=np.int64)
    vectors = space.vectors
    codes = np.concatenate([vectors.codes1[:, slots].T, vectors.codes2[slots]], axis=1)
    # Pairwise similarity from the 512-bit codes: a float matmul of 256 x 768 vectors
    # took ~40 ms on a busy machine and blocked the loop; this takes ~2 ms.
    dist = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2, dtype=np.int32)
    near = dist <= _CLUSTER_BITS
    assigned = np.full(len(recent), -1, dtype=np.int64)
    clusters: list[list[int]] = []
    for i in range(len(recent)):
        if assigned[i] >= 0:
            continue
        members = np.flatnonzero(near[i] & (assigned < 0))
        assigned[members] = len(clusters)
        clusters.append(members.tolist())
    grouped = [[recent[i] for i in c] for c in clusters if len(c) >= 2]
    singles = [recent[c[0]] for c in clusters if len(c) == 1]
    grouped += [singles[i : i + TEMPORAL_RUN] for i in range(0, len(singles), TEMPORAL_RUN)]
    return grouped


def _belief(space: MemorySpace, group: list[Memory], now: float) -> dict[str, Any]:
    ids = ",".join(m.id for m in group)
    pattern_id = "pattern_" + hashlib.sha1(ids.encode(), usedforsecurity=False).hexdigest()[:12]
    avg = sum(m.confidence for m in group) / len(group)
    citations = [
        {
            "episode_id": m.id,
            "observed_at": rfc3339(m.observed_at),
            "last_access": rfc3339(m.last_access) if m.last_access else None,
            "encoding_confidence": confidence_info(m.confidence, "Initial encoding confidence"),
            "reinforcement_count": m.recall_count,
            "content_preview": m.content[:160],
        }
        for m in group
    ]
    return {
        "id": pattern_id,
        "strength": round(min(1.0, len(group) / TEMPORAL_RUN), 6),
        "schema_confidence": confidence_info(
            avg, f"Derived from {len(group)} episodic contributions in space {space.id}"
        ),
        "last_consolidated": rfc3339(now),
        "citations": citations,
        "stats": {
            "episode_count": len(group),
            "average_source_confidence": round(avg, 6),
            "freshness_hours": 0.0,
        },
    }


class Consolidator:
    """Owns the snapshots of every space, and (normal mode) one scheduler task each."""

    def __init__(
        self,
        config: ConsolidationConfig,
        stock: bool,
        started_monotonic: float,
        rng: random.Random,
        on_run: Callable[[bool], None] | None = None,
    ) -> None:
        self._config = config
        self._stock = stock
        self._started = started_monotonic
        self._rng = rng
        self._on_run = on_run
        self._snapshots: dict[str, Snapshot] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, space: MemorySpace) -> None:
        """Start the schedule of a new space (normal mode only)."""
        if self._stock or space.id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            self._schedule(space), name=f"consolidation:{space.id}"
        )
        self._tasks[space.id] = task

    def snapshot(self, space: MemorySpace) -> dict[str, Any]:
        """The snapshot a GET /api/v1/consolidations returns for ``space``."""
        snap = self._snapshots.get(space.id)
        if snap is not None:
            return snap.to_json()
        if self._stock:
            # The stock server builds a snapshot on first request and caches it forever.
            snap = Snapshot(generated_at=time.time())
            if len(space):
                consolidate(space, snap, self._config.recent_window, snap.generated_at)
            self._snapshots[space.id] = snap
            return snap.to_json()
        # No run yet: an empty snapshot, stable (creation time), not cached.
        return Snapshot(generated_at=space.created_at).to_json()

    async def _schedule(self, space: MemorySpace) -> None:
        cfg = self._config
        loop = asyncio.get_running_loop()
        t0 = loop.time() + self._rng.uniform(0.0, min(1.0, cfg.interval_s / 10.0))
        k = 0
        while True:
            k += 1
            jitter = self._rng.uniform(-cfg.jitter_s, cfg.jitter_s) if cfg.jitter_s > 0 else 0.0
            due = t0 + k * cfg.interval_s + jitter
            await sleep_until(due)
            if cfg.stall_after_s > 0 and time.monotonic() - self._started >= cfg.stall_after_s:
                log.info("consolidation stalled (knob)", space=space.id)
                return
            if len(space):
                self._run(space)

    def _run(self, space: MemorySpace) -> None:
        snap = self._snapshots.setdefault(space.id, Snapshot(generated_at=time.time()))
        try:
            consolidate(space, snap, self._config.recent_window, time.time())
        except Exception:  # a failed pass must not kill the schedule
            log.exception("consolidation pass failed", space=space.id)
            snap.stats.failed_consolidations += 1
            if self._on_run:
                self._on_run(False)
            return
        if self._on_run:
            self._on_run(True)

    def total_runs(self) -> int:
        """Runs so far, over every space."""
        return sum(s.runs for s in self._snapshots.values())

    async def close(self) -> None:
        """Cancel every schedule and wait for them (bounded)."""
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=5.0)
        self._tasks.clear()
