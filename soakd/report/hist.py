"""Fast merging of stored HDR histogram blobs, for reports over very long runs.

A 7-day run stores ~180,000 interval records per histogram kind. Decoding each
blob into a fresh ``hdrh.HdrHistogram`` (a ~190 KB counts array per blob) is
too slow for that (figures: docs/performance.md). This module decodes each blob
with hdrh's own C varint decoder into ONE reused scratch array and adds only the
populated stretch into an accumulator. Blobs whose layout differs from the first
one (another tool wrote them) take the slow, exact path. What it needs of
hdrh's internals it takes from soakd.hdr.

The wire format is hdrh's V2 "compressed" encoding as written by
:meth:`soakd.stats.Histogram.encode`; percentiles follow hdrh's definitions
(``get_value_at_percentile``: highest equivalent value of the first bucket whose
cumulative count reaches the target count), so figures match soakd.stats.
"""

from __future__ import annotations

import binascii
import ctypes
import itertools
import struct
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from soakd.hdr import (
    EXTERNAL_HEADER_SIZE,
    PAYLOAD_HEADER_SIZE,
    WORD,
    IndexMath,
    add_counts,
    counts_by_value,
    decode_counts,
)
from soakd.stats import LatencySummary

_Layout = tuple[int, int, int]  # lowest, highest, significant figures
# hdrh's big-endian headers, read with struct: cheaper than ctypes structures,
# which matters 360,000 times a week.
_EXT = struct.Struct(">II")
_PAYLOAD = struct.Struct(">IIIIQQd")
assert _EXT.size == EXTERNAL_HEADER_SIZE
assert _PAYLOAD.size == PAYLOAD_HEADER_SIZE


class BlobError(ValueError):
    """A stored histogram blob could not be decoded."""


def _payload(blob: bytes) -> tuple[_Layout, bytes]:
    """Return the layout and the decompressed payload of a base64 V2 blob."""
    try:
        raw = binascii.a2b_base64(blob)  # base64.b64decode minus its wrapper (360k calls)
        if len(raw) < _EXT.size:
            raise BlobError("histogram blob too short")
        _cookie, length = _EXT.unpack_from(raw)
        if length != len(raw) - _EXT.size:
            raise BlobError("histogram blob length mismatch")
        data = zlib.decompress(memoryview(raw)[_EXT.size :])
        if len(data) < _PAYLOAD.size:
            raise BlobError("histogram payload too short")
    except (binascii.Error, zlib.error) as exc:
        raise BlobError(f"undecodable histogram blob: {exc}") from exc
    _c, _len, _offset, digits, lowest, highest, _ratio = _PAYLOAD.unpack_from(data)
    return (int(lowest), int(highest), int(digits)), data


class Merger:
    """An accumulating histogram fed with encoded blobs (or other mergers).

    All mergers that are combined with :meth:`add_merger` must share a layout;
    they learn it from the first blob they see.
    """

    __slots__ = ("_acc", "_layout", "_math", "_max_index", "_min_index", "_scratch", "count")

    def __init__(self) -> None:
        self._layout: _Layout | None = None
        self._math: IndexMath | None = None
        self._acc: Any = None
        self._scratch: Any = None
        self.count = 0
        self._min_index = -1
        self._max_index = -1

    def _init_layout(self, layout: _Layout) -> None:
        self._layout = layout
        self._math = IndexMath(*layout)
        n = self._math.counts_len
        self._acc = (ctypes.c_ulonglong * n)()
        self._scratch = (ctypes.c_ulonglong * n)()

    def add_blob(self, blob: bytes) -> None:
        """Add one stored encoding (raises :class:`BlobError` on garbage)."""
        layout, data = _payload(blob)
        if self._layout is None:
            self._init_layout(layout)
        if layout != self._layout:
            self._add_foreign(blob)
            return
        n = len(self._acc)
        try:
            total, lo, hi = decode_counts(data, _PAYLOAD.size, self._scratch, n)
        except ValueError as exc:
            raise BlobError(f"undecodable histogram counts: {exc}") from exc
        if total <= 0:
            return
        # Only [lo, hi] was written: add and re-zero just that stretch.
        offset, used = lo * WORD, hi - lo + 1
        scratch = ctypes.addressof(self._scratch) + offset
        add_counts(ctypes.addressof(self._acc) + offset, scratch, used)
        ctypes.memset(scratch, 0, used * WORD)
        self._note(total, lo, hi)

    def _note(self, total: int, lo: int, hi: int) -> None:
        self.count += total
        if self._min_index < 0 or lo < self._min_index:
            self._min_index = lo
        self._max_index = max(self._max_index, hi)

    def _add_foreign(self, blob: bytes) -> None:
        """Exact but slow: re-record a differently laid-out histogram value by value."""
        math = self._math
        assert math is not None
        for value, c in counts_by_value(blob):
            i = math.index_of(value)
            self._acc[i] += c
            self._note(c, i, i)

    def add_merger(self, other: Merger) -> None:
        """Fold another merger (same layout) into this one."""
        if other.count == 0:
            return
        if self._layout is None:
            assert other._layout is not None
            self._init_layout(other._layout)
        if other._layout != self._layout:
            raise BlobError("cannot merge histograms of different layouts")
        offset, used = other._min_index * WORD, other._max_index - other._min_index + 1
        add_counts(
            ctypes.addressof(self._acc) + offset, ctypes.addressof(other._acc) + offset, used
        )
        self._note(other.count, other._min_index, other._max_index)

    def reset(self) -> None:
        if self._acc is not None and self._max_index >= 0:
            ctypes.memset(self._acc, 0, (self._max_index + 1) * WORD)
        self.count = 0
        self._min_index = -1
        self._max_index = -1

    # -- reading ----------------------------------------------------------------

    def _value_ms(self, index: int) -> float:
        math = self._math
        assert math is not None
        return float(math.highest_equivalent(index)) / 1000.0

    def percentiles_ms(self, qs: Sequence[float]) -> tuple[float, ...]:
        """Values at percentiles ``qs`` (0..100), milliseconds; zeros when empty."""
        if self.count == 0:
            return tuple(0.0 for _ in qs)
        lo, hi = self._min_index, self._max_index
        cumulative = list(itertools.accumulate(self._acc[lo : hi + 1]))
        out: list[float] = []
        for q in qs:
            target = max(int(min(q, 100.0) * self.count / 100 + 0.5), 1)
            pos = min(bisect_left(cumulative, target), len(cumulative) - 1)
            out.append(self._value_ms(lo + pos))
        return tuple(out)

    def max_ms(self) -> float:
        return 0.0 if self.count == 0 else self._value_ms(self._max_index)

    def mean_ms(self) -> float:
        """Mean from bucket midpoints (hdrh's definition), milliseconds."""
        if self.count == 0:
            return 0.0
        math = self._math
        assert math is not None
        total = 0
        lo = self._min_index
        for offset, c in enumerate(self._acc[lo : self._max_index + 1]):
            if c:
                total += c * math.median_equivalent(lo + offset)
        return float(total) / float(self.count) / 1000.0

    def summary(self) -> LatencySummary:
        p50, p95, p99, p999 = self.percentiles_ms((50.0, 95.0, 99.0, 99.9))
        return LatencySummary(
            count=self.count,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            p999_ms=p999,
            max_ms=self.max_ms(),
            mean_ms=self.mean_ms(),
        )


def merge(blobs: Iterable[bytes]) -> Merger:
    """Merge many blobs into a fresh :class:`Merger`."""
    m = Merger()
    for blob in blobs:
        m.add_blob(blob)
    return m
