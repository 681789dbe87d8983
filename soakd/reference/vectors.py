"""Slot-addressed storage of 768-d embeddings with a cheap candidate search.

Engram compares each new embedding with every hot memory of its space (cosine).
Doing that exactly over 100k x 768 floats per store would make this stand-in the
bottleneck of a soak, so each vector is kept compactly, twice:

* a 512-bit sign code (random hyperplanes, SimHash): the Hamming distance between
  two codes estimates the angle between the vectors. Only the first 128 (stores)
  or 256 (recalls) bits are scanned for every slot (a fraction of a millisecond
  for 100k); the remaining bits refine the estimate for the slots that pass;
* the vector itself, quantised to int8 with a per-row scale (768 B a memory,
  cosine error ~1e-3), for the exact cosine of the few remaining candidates.

A slot stays a candidate while its distance is within 3 (first stage) and 3.5
(second stage) standard deviations of what the requested cosine implies, so a
memory whose true cosine sits exactly at the threshold is missed with
probability ~2e-3, and one further above it far less (at 0.05 above the
threshold, < 1e-4 for recall, ~0 for de-duplication). Below a threshold of
about 0.3 the candidate set is capped (the nearest MAX_CANDIDATES by code).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

DIM = 768
STAGE_WORDS = 4  # 4 x 64 = 256 bits per stage
STAGE_BITS = STAGE_WORDS * 64
MAX_CANDIDATES = 4096
STORE_WORDS = 2  # 128 bits suffice to pre-filter cosines >= 0.95 (de-duplication)
STAGE1_SIGMAS = 3.0
STAGE2_SIGMAS = 3.5
_FAR = 10_000  # beyond any Hamming distance
_PLANES_SEED = 20251121  # fixed: persisted codes must stay comparable across restarts

_planes = (
    np.random.default_rng(_PLANES_SEED).standard_normal((2 * STAGE_BITS, DIM)).astype(np.float32)
)

A = TypeVar("A", bound=npt.NDArray[Any])
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Dist = npt.NDArray[np.uint16]


def normalise(values: list[float] | F32) -> F32:
    """Unit-normalise an embedding (a zero vector stays zero)."""
    vec = np.asarray(values, dtype=np.float32).reshape(DIM)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0.0 else vec


def sign_code(unit: F32) -> U64:
    """The 512-bit SimHash of a vector, as 8 uint64 words (stage 1, then stage 2)."""
    bits = (_planes @ unit) > 0.0
    return np.packbits(bits, bitorder="little").view(np.uint64)


def hamming_cutoff(threshold: float, bits: int, sigmas: float) -> int:
    """Largest distance over ``bits`` that can still hold a cosine >= threshold."""
    theta = math.acos(max(-1.0, min(1.0, threshold)))
    p = theta / math.pi
    mean = bits * p
    sd = math.sqrt(bits * p * (1.0 - p))
    return min(bits, math.ceil(mean + sigmas * sd + 1.0))


def _popcount_rows(words: U64) -> Dist:
    """Bits set per row of an (n, 4) uint64 array."""
    counts = np.bitwise_count(words)
    # Summing columns one by one is ~10x faster than sum(axis=1) on uint8.
    total = counts[:, 0].astype(np.uint16)
    for col in range(1, words.shape[1]):
        total += counts[:, col]
    return total


class VectorStore:
    """Vectors by slot; grows in chunks up to ``capacity`` slots, never beyond."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._alloc = 0
        self.q = np.zeros((0, DIM), dtype=np.int8)
        self.scale = np.zeros(0, dtype=np.float32)
        # Stage-1 codes are stored word-major, (4, n): the scan then runs over four
        # contiguous rows, ~4x faster than over n rows of 4 words.
        self.codes1 = np.zeros((STAGE_WORDS, 0), dtype=np.uint64)
        self.codes2 = np.zeros((0, STAGE_WORDS), dtype=np.uint64)
        self.used = np.zeros(0, dtype=bool)
        self._xor = np.zeros((STAGE_WORDS, 0), dtype=np.uint64)
        self._bits = np.zeros((STAGE_WORDS, 0), dtype=np.uint8)
        self._dist = np.zeros(0, dtype=np.uint16)

    @property
    def allocated(self) -> int:
        """Number of slots allocated so far."""
        return self._alloc

    def ensure(self, slots: int) -> None:
        """Make at least ``slots`` slots addressable (doubling, capped at capacity)."""
        if slots <= self._alloc:
            return
        new = min(self.capacity, max(slots, 64, self._alloc * 2))
        self.q = _grow(self.q, new)
        self.scale = _grow(self.scale, new)
        self.codes1 = _grow(self.codes1.T, new).T.copy()
        self.codes2 = _grow(self.codes2, new)
        self.used = _grow(self.used, new)
        self._xor = np.zeros((STAGE_WORDS, new), dtype=np.uint64)
        self._bits = np.zeros((STAGE_WORDS, new), dtype=np.uint8)
        self._dist = np.zeros(new, dtype=np.uint16)
        self._alloc = new

    def put(self, slot: int, unit: F32, code: U64) -> None:
        """Store a unit vector and its code in ``slot``."""
        peak = float(np.max(np.abs(unit)))
        step = peak / 127.0 if peak > 0.0 else 1.0
        q = np.rint(unit / step).astype(np.int8)
        norm = float(np.linalg.norm(q.astype(np.float32)))
        self.q[slot] = q
        # Fold the dequantised norm into the scale so that a dot product is a cosine.
        self.scale[slot] = 1.0 / norm if norm > 0.0 else 0.0
        self.codes1[:, slot] = code[:STAGE_WORDS]
        self.codes2[slot] = code[STAGE_WORDS:]
        self.used[slot] = True

    def clear(self, slot: int) -> None:
        """Forget the vector in ``slot``."""
        self.used[slot] = False

    def hamming(self, code: U64, words: int = STAGE_WORDS) -> Dist:
        """First-stage distance over the first ``words`` words, to every allocated slot.

        Used or not: callers filter by ``used``. The result is a scratch buffer,
        valid until the next call. Stores scan 2 words (128 bits: enough to find
        cosines >= 0.95), recalls 4 (256 bits, for thresholds down to ~0.5).
        """
        if self._alloc == 0:
            return np.zeros(0, dtype=np.uint16)
        xor, bits = self._xor[:words], self._bits[:words]
        np.bitwise_xor(self.codes1[:words], code[:words, None], out=xor)
        np.bitwise_count(xor, out=bits)
        dist = self._dist
        np.add(bits[0], bits[1], out=dist, dtype=np.uint16)
        for word in range(2, words):
            dist += bits[word]
        return dist

    def cosines(self, slots: I64, unit: F32) -> F32:
        """Exact (to int8 precision) cosine of ``unit`` with the vectors in ``slots``."""
        if slots.size == 0:
            return np.zeros(0, dtype=np.float32)
        dots = self.q[slots].astype(np.float32) @ unit
        return np.asarray(dots * self.scale[slots], dtype=np.float32)

    def candidates(self, dist: Dist, words: int, code: U64, threshold: float) -> I64:
        """Used slots whose 512-bit distance allows a cosine >= threshold (bounded count)."""
        stage_bits = words * 64
        slots = np.flatnonzero(dist <= hamming_cutoff(threshold, stage_bits, STAGE1_SIGMAS))
        slots = slots[self.used[slots]]
        if slots.size == 0:
            return slots.astype(np.int64)
        full = dist[slots].astype(np.int32) + _popcount_rows(
            np.bitwise_xor(self.codes2[slots], code[STAGE_WORDS:])
        )
        if words < STAGE_WORDS:
            rest = np.bitwise_xor(self.codes1[words:, slots], code[words:STAGE_WORDS, None])
            full += np.bitwise_count(rest).sum(axis=0, dtype=np.int32)
        keep = full <= hamming_cutoff(threshold, 2 * STAGE_BITS, STAGE2_SIGMAS)
        slots, full = slots[keep], full[keep]
        if slots.size > MAX_CANDIDATES:
            # Very low thresholds: keep the nearest by code only.
            nearest = np.argpartition(full, MAX_CANDIDATES)[:MAX_CANDIDATES]
            slots = slots[nearest]
        return slots.astype(np.int64)

    def search(self, unit: F32, threshold: float, limit: int) -> list[tuple[int, float]]:
        """Slots with cosine >= threshold, best first, at most ``limit``."""
        code = sign_code(unit)
        dist = self.hamming(code)
        return self.search_with(dist, STAGE_WORDS, code, unit, threshold=threshold, limit=limit)

    def search_with(
        self, dist: Dist, words: int, code: U64, unit: F32, *, threshold: float, limit: int
    ) -> list[tuple[int, float]]:
        """As :meth:`search`, reusing first-stage distances (over ``words``) already computed."""
        slots = self.candidates(dist, words, code, threshold)
        cos = self.cosines(slots, unit)
        keep = cos >= threshold
        slots, cos = slots[keep], cos[keep]
        order = np.argsort(-cos, kind="stable")[: max(0, limit)]
        return [(int(slots[i]), float(cos[i])) for i in order]

    def nearest(self, dist: Dist, words: int, k: int) -> I64:
        """About the ``k`` used slots nearest by first-stage distance (approximate kNN)."""
        if dist.size == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64)
        # Widen the radius until k slots are inside: a full argpartition costs ~1 ms at
        # 100k slots, a comparison and flatnonzero a tenth of that.
        half = words * 32
        sd = math.sqrt(words * 64) / 2
        for radius in (half - 3.5 * sd, half - 2 * sd, half, _FAR):
            slots = np.flatnonzero(dist <= radius)
            slots = slots[self.used[slots]]
            if slots.size >= k or radius == _FAR:
                break
        if slots.size > k:
            slots = slots[np.argpartition(dist[slots], k - 1)[:k]]
        return slots.astype(np.int64)


def _grow(arr: A, rows: int) -> A:
    shape = (rows, *arr.shape[1:])
    out = np.zeros(shape, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return cast(A, out)
