"""Everything soakd does with hdrhistogram's internals, in this one module.

Why: hdrh's public API gives the right answers but is slow on soakd's paths
(recording three values per request, percentiles and means that walk ~23k
counters in Python, a report that merges a week of stored blobs; the figures
are in docs/perf-scheduler.md and docs/performance.md). So soakd reads and
writes the histogram's counters array and bucket fields directly, and calls
hdrh's C helpers (``pyhdrh.decode``, ``add_array``) and private methods
(``_counts_index_for``, ``_hdr_median_equiv_value``). None of that is promised
by hdrh's API: it is what **hdrhistogram 0.10.8** has, the version pinned in
pyproject.toml. Before moving the pin, run tests/test_stats.py and
tests/test_report_parts.py: they compare every shortcut here with hdrh's own
answers. No other soakd module imports ``hdrh`` or ``pyhdrh``.
"""

from __future__ import annotations

import ctypes
import operator
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from hdrh.codec import ExternalHeader, PayloadHeader
from hdrh.histogram import HdrHistogram
from pyhdrh import (  # type: ignore[import-not-found]  # hdrh's C helpers, no stubs
    add_array,
    decode,
)

#: The version whose internals this module uses (pyproject.toml pins it).
HDRH_VERSION = "0.10.8"

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # 1 h
SIGNIFICANT_DIGITS = 3
#: Per histogram layout: the midpoint of every counter's value range (one list
#: of ~23k uint64 for soakd's single layout, built on first use).
_MIDPOINTS: dict[tuple[int, int, int], npt.NDArray[np.uint64]] = {}


class Histogram:
    """A latency histogram in microseconds (a thin, typed wrapper over ``hdrh``)."""

    __slots__ = ("_h", "_half", "_half_mag", "_mask", "_shift", "_unit", "clamped")

    def __init__(self, _inner: HdrHistogram | None = None) -> None:
        h: HdrHistogram = (
            _inner
            if _inner is not None
            else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        )
        self._h = h
        self.clamped = 0  # values above HIGHEST_US recorded as HIGHEST_US (not encoded)
        # hdrh's own record_value costs ~1.2 us (five method calls and a bin()
        # string per value); record_ns does the same bucket arithmetic inline with
        # int.bit_length(), ~3x cheaper, and it runs three times per request.
        self._mask: int = h.sub_bucket_mask
        self._unit: int = h.unit_magnitude
        self._half_mag: int = h.sub_bucket_half_count_magnitude
        self._half: int = h.sub_bucket_half_count
        self._shift: int = h.unit_magnitude + h.sub_bucket_half_count_magnitude + 1

    @property
    def count(self) -> int:
        return int(self._h.total_count)

    def record_ns(self, ns: int) -> None:
        """Record one duration given in nanoseconds (rounded to the nearest microsecond)."""
        us = (ns + 500) // 1000
        if us < 0:
            us = 0
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += 1
        h = self._h
        # Same index as HdrHistogram._counts_index_for(us) (bit_length == 64 - clz).
        bucket = (us | self._mask).bit_length() - self._shift
        h.counts[((bucket + 1) << self._half_mag) + (us >> (bucket + self._unit)) - self._half] += 1
        h.total_count += 1
        # Plain ifs, not max()/min(): no call and no store on the common path.
        if us > h.max_value:  # noqa: PLR1730
            h.max_value = us
        if us < h.min_value:  # noqa: PLR1730
            h.min_value = us

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other`` into this histogram (C-speed array add)."""
        if other._h.total_count:
            self._h.add(other._h)
        self.clamped += other.clamped

    def percentile_ms(self, q: float) -> float:
        """The value at percentile ``q`` (0..100) in milliseconds; 0.0 when empty."""
        return self.percentiles_ms((q,))[q]

    def percentiles_ms(self, qs: Sequence[float]) -> dict[float, float]:
        """Several percentiles at once, with hdrh's semantics (highest equivalent value).

        hdrh walks all 23k counters with a method call each; a numpy running sum
        plus a binary search gives the same answer exactly (unsigned 64-bit
        integers throughout), far faster (docs/perf-scheduler.md).
        """
        h = self._h
        total = h.total_count
        if not total:
            return dict.fromkeys(qs, 0.0)
        cumulative = np.cumsum(self._used_counts())
        targets = np.array(
            [max(int(min(q, 100.0) * total / 100 + 0.5), 1) for q in qs], dtype=np.uint64
        )
        # The first counter whose cumulative count reaches each target.
        indexes: list[int] = np.searchsorted(cumulative, targets, side="left").tolist()
        result: dict[float, float] = {}
        for q, index in zip(qs, indexes, strict=True):
            lowest, size = self._index_range(index)
            result[q] = float(lowest + size - 1 if q else lowest) / 1000.0
        return result

    def max_ms(self) -> float:
        if not self._h.total_count:
            return 0.0
        return float(self._h.get_max_value()) / 1000.0

    def mean_ms(self) -> float:
        """Mean in milliseconds, from bucket midpoints (hdrh's definition)."""
        h = self._h
        total_count = h.total_count
        if not total_count:
            return 0.0
        # hdrh's get_mean_value builds an iterator object per bucket (~40 ms for
        # 50k distinct values); a dot product with cached midpoints is ~20 us.
        counts = self._used_counts()
        midpoints = self._midpoints()[: len(counts)]
        if total_count * int(midpoints[-1]) < 2**64:
            total = int(np.dot(counts, midpoints))  # exact: no partial sum can overflow
        else:  # absurd counts of hour-long values: Python ints never overflow
            total = sum(map(operator.mul, counts.tolist(), midpoints.tolist()))
        return float(total) / float(total_count) / 1000.0

    def _midpoints(self) -> npt.NDArray[np.uint64]:
        """The midpoint of every counter's value range, cached per histogram layout."""
        key = (self._unit, self._half_mag, self._h.counts_len)
        cached = _MIDPOINTS.get(key)
        if cached is None:
            mids = []
            for index in range(self._h.counts_len):
                lowest, size = self._index_range(index)
                mids.append(lowest + (size >> 1))
            cached = _MIDPOINTS[key] = np.array(mids, dtype=np.uint64)
        return cached

    def _used_counts(self) -> npt.NDArray[np.uint64]:
        """The counters up to the highest one in use: a view, not a copy."""
        h = self._h
        counts: npt.NDArray[np.uint64] = np.ctypeslib.as_array(h.counts)
        return counts[: h.get_counts_array_index(h.max_value) + 1]

    def _index_range(self, index: int) -> tuple[int, int]:
        """(lowest value, width) of the values counted at ``index`` (hdrh's layout)."""
        bucket = (index >> self._half_mag) - 1
        sub = (index & (self._half - 1)) + self._half
        if bucket < 0:
            sub -= self._half
            bucket = 0
        shift = bucket + self._unit
        return sub << shift, 1 << shift

    def encode(self) -> bytes:
        """The standard compressed, base64 HDR encoding (readable by other HDR tools)."""
        blob = self._h.encode()
        return blob if isinstance(blob, bytes) else str(blob).encode("ascii")

    @classmethod
    def decode(cls, blob: bytes) -> Histogram:
        return cls(HdrHistogram.decode(blob))

    def reset(self) -> None:
        """Empty the histogram in place (no new allocation, so memory stays flat)."""
        h = self._h
        # hdrh's reset() zeroes the 23k counters in a Python loop (~1 ms); memset is ~1 us.
        ctypes.memset(ctypes.addressof(h.counts), 0, ctypes.sizeof(h.counts))
        h.total_count = 0
        h.min_value = sys.maxsize
        h.max_value = 0
        h.start_time_stamp_msec = sys.maxsize
        h.end_time_stamp_msec = 0
        self.clamped = 0


# -- for soakd.report.hist: stored blobs merged without a histogram per blob -------------

#: Sizes of hdrh's big-endian V2 headers (hdrh.codec.ExternalHeader / PayloadHeader).
EXTERNAL_HEADER_SIZE = ctypes.sizeof(ExternalHeader)
PAYLOAD_HEADER_SIZE = ctypes.sizeof(PayloadHeader)
#: V2 encodings always carry 64-bit counters.
WORD = 8


def decode_counts(data: bytes, offset: int, dest: Any, n: int) -> tuple[int, int, int]:
    """Add a V2 payload's counters into the ctypes array ``dest`` (hdrh's C decoder).

    Returns (total count, lowest index written, highest index written); raises
    ValueError on a malformed payload.
    """
    try:
        res = decode(data, offset, ctypes.addressof(dest), n, WORD)
    except Exception as exc:  # the C decoder raises plain ValueError/IndexError
        raise ValueError(str(exc)) from exc
    return int(res["total"]), int(res["min_nonzero_index"]), int(res["max_nonzero_index"])


def add_counts(dest_address: int, src_address: int, used: int) -> None:
    """``dest[i] += src[i]`` for ``used`` 64-bit counters (hdrh's C helper)."""
    add_array(dest_address, src_address, used, WORD)


class IndexMath:
    """Counter index <-> value for one layout, with hdrh's own arithmetic."""

    __slots__ = ("_tpl", "counts_len", "highest")

    def __init__(self, lowest: int, highest: int, digits: int) -> None:
        self._tpl = HdrHistogram(lowest, highest, digits)
        self.counts_len = int(self._tpl.counts_len)
        self.highest = int(self._tpl.highest_trackable_value)

    def highest_equivalent(self, index: int) -> int:
        """The highest value counted at ``index`` (what percentiles report)."""
        tpl = self._tpl
        return int(tpl.get_highest_equivalent_value(tpl.get_value_from_index(index)))

    def median_equivalent(self, index: int) -> int:
        """The midpoint of the values counted at ``index`` (what means are made of)."""
        tpl = self._tpl
        return int(tpl._hdr_median_equiv_value(tpl.get_value_from_index(index)))

    def index_of(self, value: int) -> int:
        """The counter a value lands in (values above the highest are clamped)."""
        return int(self._tpl._counts_index_for(min(value, self.highest)))


def counts_by_value(blob: bytes) -> Iterator[tuple[int, int]]:
    """(value, count) of every non-empty counter of a blob, any layout (slow, exact)."""
    other = HdrHistogram.decode(blob)
    for index in range(int(other.counts_len)):
        c = int(other.get_count_at_index(index))
        if c:
            yield int(other.get_value_from_index(index)), c
