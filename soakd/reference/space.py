"""One memory space: bounded hot memories, de-duplication, eviction, association graph.

Engram keeps at most ``capacity`` hot memories per space and evicts the
least-activated one past that; a new embedding within cosine 0.95 of a hot
memory is silently skipped. Each memory is linked to its nearest existing
memories (approximate, by sign code) and to the previous memory of the space;
links are kept both ways (a bounded ring of in-links) so activation can spread
in either direction.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from soakd.reference.vectors import F32, STORE_WORDS, VectorStore, normalise, sign_code

DEDUP_COSINE = 0.95
K_NEAREST = 4
K_OUT = K_NEAREST + 1  # nearest neighbours + the previous memory
K_IN = 6
TEMPORAL_WEIGHT = 1.0
# Ties in activation are broken oldest-first: each uid adds this much.
_RECENCY_EPS = 1e-9
RECENT = 1024  # >= the consolidation window (256), with room for evicted entries
A = TypeVar("A", bound=npt.NDArray[Any])
CONSTANT_VECTOR = normalise([0.5] * 768)  # Engram's vector for stores without one


class StoreResult(Enum):
    """What a remember did to the space."""

    STORED = "stored"
    REPLACED = "replaced"
    DEDUPLICATED = "deduplicated"


@dataclass(frozen=True, slots=True)
class Memory:
    """A read-only view of a hot memory (its vector is at ``slot`` of the VectorStore)."""

    id: str
    content: str
    confidence: float
    observed_at: float
    stored_at: float
    slot: int
    uid: int
    recall_count: int = 0
    last_access: float | None = None


# (id, content, confidence, observed_at, stored_at, uid): an exact tuple of atomic
# values, which CPython's cyclic GC stops tracking. Keeping 100k-1M memories as
# such tuples (and dicts of str/int) keeps full GC passes short; a million tracked
# objects would make each full collection a ~0.5 s stall.
Record = tuple[str, str, float, float, float, int]


@dataclass(frozen=True)
class RememberOutcome:
    """Result of a remember: the kind, and which memory was evicted to make room."""

    result: StoreResult
    evicted: str | None = None
    duplicate_of: str | None = None


class MemorySpace:
    """Memories of one space; every method runs on the event loop (no locking)."""

    def __init__(self, space_id: str, capacity: int, created_at: float | None = None) -> None:
        self.id = space_id
        self.capacity = capacity
        self.created_at = time.time() if created_at is None else created_at
        self.vectors = VectorStore(capacity)
        self.by_id: dict[str, int] = {}  # id -> slot
        self.by_uid: dict[int, int] = {}  # uid -> slot
        self.records: list[Record | None] = []  # by slot
        self._free: list[int] = []
        self.activation = np.zeros(0, dtype=np.float64)
        self.recall_count = np.zeros(0, dtype=np.int64)
        self.last_access = np.zeros(0, dtype=np.float64)  # NaN: never accessed
        self.out_uid = np.zeros((0, K_OUT), dtype=np.int64)
        self.out_w = np.zeros((0, K_OUT), dtype=np.float32)
        self.in_uid = np.zeros((0, K_IN), dtype=np.int64)
        self.in_w = np.zeros((0, K_IN), dtype=np.float32)
        self.in_next = np.zeros(0, dtype=np.int8)
        self.next_uid = 1
        self.last_uid = 0
        self.recent: deque[int] = deque(maxlen=RECENT)  # newest uids, for consolidation
        self.dirty = False
        self.stores = 0
        self.deduplicated = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def view(self, slot: int) -> Memory | None:
        """The memory in ``slot`` as a read-only view (None if the slot is free)."""
        record = self.records[slot] if 0 <= slot < len(self.records) else None
        if record is None:
            return None
        mid, content, confidence, observed, stored, uid = record
        last = float(self.last_access[slot])
        return Memory(
            mid,
            content,
            confidence,
            observed,
            stored,
            slot,
            uid,
            int(self.recall_count[slot]),
            None if math.isnan(last) else last,
        )

    def by_uid_view(self, uid: int) -> Memory | None:
        """A hot memory by its internal uid."""
        slot = self.by_uid.get(uid)
        return None if slot is None else self.view(slot)

    # -- storage ---------------------------------------------------------------------------

    def remember(
        self,
        memory_id: str,
        content: str,
        embedding: list[float] | F32 | None,
        confidence: float,
        observed_at: float,
    ) -> RememberOutcome:
        """Store a memory unless a hot memory is within cosine 0.95 of it."""
        unit = CONSTANT_VECTOR if embedding is None else normalise(embedding)
        code = sign_code(unit)
        self.stores += 1
        replaced = memory_id in self.by_id
        if replaced:
            self._remove(self.by_id[memory_id])
        dist = self.vectors.hamming(code, STORE_WORDS)
        dup = (
            self.vectors.search_with(dist, STORE_WORDS, code, unit, threshold=DEDUP_COSINE, limit=1)
            if dist.size
            else []
        )
        if dup:
            self.deduplicated += 1
            holder = self.records[dup[0][0]]
            return RememberOutcome(
                StoreResult.DEDUPLICATED, duplicate_of=holder[0] if holder else None
            )
        # An evicted slot is marked unused, so the neighbour search below skips it.
        evicted = self._evict() if len(self.by_id) >= self.capacity else None
        neighbours = (
            self.vectors.nearest(dist, STORE_WORDS, K_NEAREST)
            if dist.size
            else np.zeros(0, np.int64)
        )
        slot, uid = self._insert(
            memory_id, content, unit, code, confidence=confidence, observed_at=observed_at
        )
        self._link(slot, uid, neighbours, unit)
        result = StoreResult.REPLACED if replaced else StoreResult.STORED
        return RememberOutcome(result, evicted=evicted)

    def get(self, memory_id: str) -> Memory | None:
        """A hot memory by id."""
        slot = self.by_id.get(memory_id)
        return None if slot is None else self.view(slot)

    def _insert(
        self,
        memory_id: str,
        content: str,
        unit: F32,
        code: npt.NDArray[np.uint64],
        *,
        confidence: float,
        observed_at: float,
    ) -> tuple[int, int]:
        slot = self._free.pop() if self._free else len(self.records)
        if slot == len(self.records):
            self.records.append(None)
            self.ensure_slots(slot + 1)
        uid = self.next_uid
        self.next_uid += 1
        self.records[slot] = (memory_id, content, confidence, observed_at, time.time(), uid)
        self.vectors.put(slot, unit, code)
        self.by_id[memory_id] = slot
        self.by_uid[uid] = slot
        self.activation[slot] = confidence + _RECENCY_EPS * uid
        self.recall_count[slot] = 0
        self.last_access[slot] = np.nan
        self.out_uid[slot] = 0
        self.out_w[slot] = 0.0
        self.in_uid[slot] = 0
        self.in_w[slot] = 0.0
        self.in_next[slot] = 0
        self.recent.append(uid)
        self.dirty = True
        return slot, uid

    def ensure_slots(self, slots: int) -> None:
        """Make at least ``slots`` slots addressable in every per-slot array."""
        self.vectors.ensure(slots)
        rows = self.vectors.allocated
        if rows > self.activation.shape[0]:
            self.activation = _grow(self.activation, rows, np.inf)
            self.recall_count = _grow(self.recall_count, rows, 0)
            self.last_access = _grow(self.last_access, rows, np.nan)
            self.out_uid = _grow(self.out_uid, rows, 0)
            self.out_w = _grow(self.out_w, rows, 0)
            self.in_uid = _grow(self.in_uid, rows, 0)
            self.in_w = _grow(self.in_w, rows, 0)
            self.in_next = _grow(self.in_next, rows, 0)

    def _link(self, slot: int, uid: int, neighbours: npt.NDArray[np.int64], unit: F32) -> None:
        """Link to the nearest memories (weight from cosine) and to the previous one."""
        cos = self.vectors.cosines(neighbours, unit)
        col = 0
        for other_slot, c in zip(neighbours.tolist(), cos.tolist(), strict=True):
            other = self.records[other_slot]
            if other is None or other[5] == uid:
                continue
            self._edge(slot, uid, col, (other_slot, other[5]), 0.5 + 0.5 * max(c, 0.0))
            col += 1
        previous = self.by_uid.get(self.last_uid)
        if previous is not None and self.last_uid != uid and col < K_OUT:
            self._edge(slot, uid, col, (previous, self.last_uid), TEMPORAL_WEIGHT)
        self.last_uid = uid

    def _edge(self, slot: int, uid: int, col: int, other: tuple[int, int], weight: float) -> None:
        other_slot, other_uid = other
        self.out_uid[slot, col] = other_uid
        self.out_w[slot, col] = weight
        ring = int(self.in_next[other_slot])
        self.in_uid[other_slot, ring] = uid
        self.in_w[other_slot, ring] = weight
        self.in_next[other_slot] = (ring + 1) % K_IN

    def neighbours(self, memory: Memory) -> list[tuple[Memory, float]]:
        """Live neighbours of a memory with their link weights (out-links, then in-links)."""
        out: list[tuple[Memory, float]] = []
        slot = memory.slot
        links = zip(
            self.out_uid[slot].tolist() + self.in_uid[slot].tolist(),
            self.out_w[slot].tolist() + self.in_w[slot].tolist(),
            strict=True,
        )
        for uid, weight in links:
            other = self.by_uid_view(uid) if uid else None
            if other is not None:
                out.append((other, weight))
        return out

    # -- eviction and activation --------------------------------------------------------------

    def _evict(self) -> str | None:
        """Evict the least-activated memory (ties: oldest first); return its id."""
        if not self.by_id:
            return None
        slot = int(np.argmin(self.activation))
        record = self.records[slot]
        if record is None:
            return None
        self._remove(slot)
        self.evicted += 1
        return record[0]

    def _remove(self, slot: int) -> None:
        record = self.records[slot]
        assert record is not None
        self.vectors.clear(slot)
        self.activation[slot] = np.inf
        self.records[slot] = None
        del self.by_id[record[0]]
        del self.by_uid[record[5]]
        self._free.append(slot)
        self.dirty = True

    def touch(self, memory: Memory, amount: float, now: float) -> None:
        """Raise a memory's activation after a recall or spread hit."""
        if self.by_uid.get(memory.uid) != memory.slot:
            return  # evicted or replaced since the view was taken
        self.activation[memory.slot] += amount
        self.recall_count[memory.slot] += 1
        self.last_access[memory.slot] = now

    # -- recall -----------------------------------------------------------------------------

    def recall_embedding(
        self, embedding: list[float] | F32, threshold: float, limit: int
    ) -> list[tuple[Memory, float]]:
        """Memories with cosine >= threshold to ``embedding``, best first."""
        hits = self.vectors.search(normalise(embedding), threshold, limit)
        out: list[tuple[Memory, float]] = []
        for slot, cos in hits:
            memory = self.view(slot)
            if memory is not None:
                out.append((memory, cos))
        return out

    def recall_text(
        self, query: str, threshold: float, limit: int, scan_limit: int
    ) -> list[tuple[Memory, float]]:
        """Memories whose content holds the query's words (newest ``scan_limit`` scanned)."""
        words = [w for w in query.lower().split() if w]
        if not words:
            return []
        scored: list[tuple[int, float]] = []
        for n, slot in enumerate(reversed(self.by_id.values())):
            if n >= scan_limit:
                break
            record = self.records[slot]
            text = record[1].lower() if record else ""
            score = sum(1 for w in words if w in text) / len(words)
            if score >= threshold and score > 0.0:
                scored.append((slot, score))
        scored.sort(key=lambda pair: -pair[1])
        out: list[tuple[Memory, float]] = []
        for slot, score in scored[:limit]:
            memory = self.view(slot)
            if memory is not None:
                out.append((memory, score))
        return out

    def recent_memories(self, limit: int) -> list[Memory]:
        """The newest hot memories, oldest first (for consolidation)."""
        out: list[Memory] = []
        for uid in reversed(self.recent):
            memory = self.by_uid_view(uid)
            if memory is not None:
                out.append(memory)
                if len(out) >= limit:
                    break
        out.reverse()
        return out


def _grow(arr: A, rows: int, fill: float) -> A:
    shape = (rows, *arr.shape[1:])
    out = np.full(shape, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return cast(A, out)
