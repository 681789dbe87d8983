"""The memory-leak fit: is memory growing, and is the growth explained by the data?

What is fitted is a Sample field: anonymous memory (``rss_anon_bytes``, the
memory that can leak) by default, total RSS when a rule asks for it
(:func:`memory_field`). File-backed pages of mapped data files count in RSS
but are reclaimable page cache: Engram maps 3.1 GB per space (engram-api.md §7).

A leak is growth that does not follow the dataset. Engram caps each space at
100k memories, so a soak at the plan's rates spends its first hours *filling*:
RSS then grows with the memory count, legitimately, at a rate that would read
as hundreds of percent a day. With a fixed store rate the memory count grows
linearly in time, exactly like a leak does, so while the count grows the two
cannot be separated by any fit; :func:`leak_fit` therefore judges

* ``rss``: the RSS trend itself, when the memory count is flat (or unknown);
* ``after_flat``: the RSS trend since the count became flat, when the window
  starts while filling and ends with a long enough flat stretch;
* ``follows_data``: nothing, while the count is still growing, unless the
  marginal cost per stored memory is far beyond what a memory costs
  (``bytes_per_memory_ceiling``: :data:`LEAK_COST_FACTOR` times
  :data:`MEMORY_COST_BYTES` by default), which is then ``exceeds_data``.

The figure judged is the Theil–Sen slope, as percent of the post-warm-up
baseline per day and as MB/h (Engram's own plan flags > 10 MB/h at R² > 0.8),
with its least-squares R² and the slope over the stretch's second half (a
growth that is levelling off is a warm-up, not a leak).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from soakd.model import Sample
from soakd.rules.fit import Line, fit_line
from soakd.spec.model import MemorySeries

#: Fewest samples a fit is made from.
MIN_FIT_POINTS = 10
#: Memory-count change under which the dataset counts as flat (relative, absolute).
FLAT_RELATIVE = 0.005
FLAT_ABSOLUTE = 10
#: What one stored memory costs in Engram: the 768 x f32 embedding (3,072 B), its
#: content and metadata (~1 KiB for the short texts a soak stores) and its index
#: entries (~0.5 KiB of graph links); docs/spec.md ("What a memory costs").
MEMORY_COST_BYTES = 768 * 4 + 1024 + 512
#: Marginal growth per stored memory beyond this many times its cost is a leak, even
#: while the data grows (allocator slack and caches stay well under it).
LEAK_COST_FACTOR = 4.0
BYTES_PER_MEMORY_CEILING = LEAK_COST_FACTOR * MEMORY_COST_BYTES
#: The name in words of each Sample field a leak fit may judge.
SERIES_WORDS = {
    "rss_anon_bytes": "anonymous memory",
    "heap_bytes": "anonymous memory",
    "rss_bytes": "RSS",
}


def memory_field(samples: Sequence[Sample], series: MemorySeries) -> str:
    """The Sample field that holds ``series`` in these samples.

    Anonymous memory is ``rss_anon_bytes``; samples from before that field
    existed carry the same figure as ``heap_bytes`` (RssAnon). With neither, the
    fit falls back to RSS, and says so through the field it names.
    """
    if series is MemorySeries.RSS:
        return "rss_bytes"
    for name in ("rss_anon_bytes", "heap_bytes"):
        if any(getattr(s, name) is not None for s in samples):
            return name
    return "rss_bytes"


_DAY_S = 86400.0


@dataclass(frozen=True)
class LeakFit:
    """The memory trend of a run (or of a window of it); every size in bytes."""

    judged: str  # "rss" | "after_flat" | "follows_data" | "exceeds_data" | "insufficient"
    points: int  # samples in the judged stretch
    span_s: float  # time the judged stretch covers
    warmup_s: float
    baseline_bytes: float | None  # median RSS right after warm-up
    slope_bytes_per_s: float  # Theil–Sen over the whole post-warm-up window
    pct_per_day: float  # that slope, as % of baseline_bytes per day
    mb_per_h: float  # that slope in MB (1e6 bytes) per hour
    r2: float  # least-squares R² of the window
    memories_first: int | None
    memories_last: int | None
    data_growing: bool
    bytes_per_memory: float | None  # RSS / memories at the end of the window
    marginal_bytes_per_memory: float | None  # ΔRSS / Δmemories over the window
    flat_since: float | None  # when the memory count became flat (None: not in this window)
    growth_after_flat_pct_per_day: float | None
    growth_after_flat_mb_per_h: float | None
    judged_pct_per_day: float | None  # the figure the rule compares (None: nothing to judge)
    judged_mb_per_h: float | None
    judged_r2: float | None
    recent_pct_per_day: float | None  # slope over the judged stretch's second half
    judged_growth_bytes: float | None  # the judged slope times the judged span
    field: str = "rss_bytes"  # the Sample field fitted
    bytes_per_memory_ceiling: float = BYTES_PER_MEMORY_CEILING

    @property
    def series(self) -> str:
        """The memory fitted, in words ("anonymous memory", "RSS")."""
        return SERIES_WORDS.get(self.field, self.field)

    def as_dict(self) -> dict[str, object]:
        """Every field, for the rule's detail and the report."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _points(samples: Sequence[Sample], field: str) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s in samples:
        value = getattr(s, field)
        if value is not None:
            out.append((s.t, float(value)))
    return out


def _baseline(points: Sequence[tuple[float, float]]) -> float | None:
    """Median of the first stretch: the first 10 % of the span, at most 5 min, >= 3 points."""
    if not points:
        return None
    span = points[-1][0] - points[0][0]
    limit = points[0][0] + min(300.0, 0.10 * span)
    head = [y for t, y in points if t <= limit]
    if len(head) < 3:
        head = [y for _, y in points[:3]]
    return statistics.median(head)


def _rates(line: Line, baseline: float | None) -> tuple[float, float]:
    pct = line.slope * _DAY_S / baseline * 100.0 if baseline else 0.0
    return pct, line.slope * 3600.0 / 1e6


def _flat_start(mems: Sequence[tuple[float, float]]) -> int:
    """Index where the trailing stretch of (near-)constant memory count begins."""
    last = mems[-1][1]
    tolerance = max(FLAT_ABSOLUTE, FLAT_RELATIVE * last)
    i = len(mems) - 1
    while i > 0 and abs(mems[i - 1][1] - last) <= tolerance:
        i -= 1
    return i


def _current_process_since(samples: Sequence[Sample]) -> float:
    """Time of the first sample of the last PID seen (-inf when it never changed)."""
    last_pid: int | None = None
    since = float("-inf")
    for s in samples:
        if s.pid is None:
            continue
        if last_pid is not None and s.pid != last_pid:
            since = s.t
        last_pid = s.pid
    return since


@dataclass(frozen=True)
class _Judged:
    how: str
    points: Sequence[tuple[float, float]]
    baseline: float | None


def leak_fit(
    samples: Sequence[Sample],
    warmup_s: float,
    *,
    run_started: float | None = None,
    window_s: float | None = None,
    now: float | None = None,
    min_span_s: float = 0.0,
    field: str = "rss_bytes",
    bytes_per_memory_ceiling: float = BYTES_PER_MEMORY_CEILING,
    current_process_only: bool = False,
) -> LeakFit:
    """Fit the growth of ``field`` (RSS by default) over the samples after warm-up.

    ``samples`` are sorted by time; ``run_started`` defaults to the first
    sample's time and ``now`` to the last one's. The baseline is taken right
    after warm-up; the trend over the trailing ``window_s`` (default: everything
    after warm-up). A flat stretch must cover ``min_span_s`` (and 10 points) to
    be judged on its own. ``current_process_only`` (the alert rule sets it)
    fits only the samples of the last PID, after its own warm-up.
    """
    start = run_started if run_started is not None else (samples[0].t if samples else 0.0)
    # a restarted target starts its memory afresh: the rule judges its current process
    # only, after its own warm-up (a new process climbing back up is not a leak)
    if current_process_only:
        start = max(start, _current_process_since(samples))
    post = [s for s in samples if s.t >= start + warmup_s]
    end = now if now is not None else (post[-1].t if post else start)
    pts_all = _points(post, field)
    baseline = _baseline(pts_all)
    lo = end - window_s if window_s is not None else float("-inf")
    window = [s for s in post if lo <= s.t <= end]
    pts = _points(window, field)
    line = fit_line(pts) if len(pts) >= 2 else Line(0.0, 0.0, end, 0.0, 0.0, len(pts))
    pct, mb_h = _rates(line, baseline)
    mems = _points(window, "memories")
    mem_first = int(mems[0][1]) if mems else None
    mem_last = int(mems[-1][1]) if mems else None
    growing = bool(mems) and mems[-1][1] - mems[0][1] > max(
        FLAT_ABSOLUTE, FLAT_RELATIVE * mems[-1][1]
    )
    per_mem = pts[-1][1] / mem_last if pts and mem_last else None
    marginal = None
    # Memory per stored memory over the stretch where the count is known: memory read
    # after the last count (a poll failing under load) has no count to be divided by.
    known = [p for p in pts if mems and mems[0][0] <= p[0] <= mems[-1][0]]
    if growing and len(known) >= 2:
        marginal = (known[-1][1] - known[0][1]) / (mems[-1][1] - mems[0][1])
    flat_since: float | None = None
    after_pct: float | None = None
    after_mb: float | None = None
    judged = _Judged("rss", pts, baseline)
    if growing:
        # Flat only while the count is known: after the last count read (the poll failing
        # under load), the data may still be growing.
        flat_from, flat_to = mems[_flat_start(mems)][0], mems[-1][0]
        flat_pts = [p for p in pts if flat_from <= p[0] <= flat_to]
        long_enough = (
            len(flat_pts) >= MIN_FIT_POINTS and flat_pts[-1][0] - flat_pts[0][0] >= min_span_s
        )
        if long_enough:
            flat_since = flat_pts[0][0]
            flat_base = _baseline(flat_pts)
            after_pct, after_mb = _rates(fit_line(flat_pts), flat_base)
            judged = _Judged("after_flat", flat_pts, flat_base)
        elif marginal is not None and marginal > bytes_per_memory_ceiling:
            judged = _Judged("exceeds_data", pts, baseline)
        else:
            judged = _Judged("follows_data", (), baseline)
    fig = _judge(judged)
    return LeakFit(
        judged=fig.how,
        points=len(judged.points),
        span_s=fig.span_s,
        warmup_s=warmup_s,
        baseline_bytes=baseline,
        slope_bytes_per_s=line.slope,
        pct_per_day=pct,
        mb_per_h=mb_h,
        r2=line.r2,
        memories_first=mem_first,
        memories_last=mem_last,
        data_growing=growing,
        bytes_per_memory=per_mem,
        marginal_bytes_per_memory=marginal,
        flat_since=flat_since,
        growth_after_flat_pct_per_day=after_pct,
        growth_after_flat_mb_per_h=after_mb,
        judged_pct_per_day=fig.pct,
        judged_mb_per_h=fig.mb,
        judged_r2=fig.r2,
        recent_pct_per_day=fig.recent,
        judged_growth_bytes=fig.growth,
        field=field,
        bytes_per_memory_ceiling=bytes_per_memory_ceiling,
    )


@dataclass(frozen=True)
class _Figures:
    how: str
    span_s: float
    pct: float | None = None
    mb: float | None = None
    r2: float | None = None
    recent: float | None = None
    growth: float | None = None


def _judge(judged: _Judged) -> _Figures:
    """The judged stretch's rates, R² and second-half rate (or why there are none)."""
    pts = judged.points
    span = pts[-1][0] - pts[0][0] if len(pts) >= 2 else 0.0
    if judged.how == "follows_data":
        return _Figures("follows_data", span)
    if len(pts) < MIN_FIT_POINTS:
        return _Figures("insufficient", span)
    line = fit_line(pts)
    pct, mb = _rates(line, judged.baseline)
    half = [p for p in pts if p[0] >= pts[0][0] + span / 2.0]
    recent = _rates(fit_line(half), judged.baseline)[0] if len(half) >= 2 else None
    return _Figures(judged.how, span, pct, mb, line.r2, recent, line.slope * span)
