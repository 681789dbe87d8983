"""The report's building blocks: checkpoints, LTTB, histogram merging, SVG charts."""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soakd.report.charts import Chart, Series, nice_ticks, render
from soakd.report.checkpoints import checkpoint_due, midpoint_s, schedule
from soakd.report.hist import BlobError, Merger, merge
from soakd.report.lttb import downsample, lttb
from soakd.stats import Histogram, LatencySummary, merge_blobs

DAY = 86400.0
WEEK = 7 * DAY
T0 = 1_000_000.0


def test_week_schedule_has_six_dailies_and_day3_midpoint() -> None:
    """A 7-day run checkpoints daily and at the plan's day-3 mid-point (not twice at 72 h)."""
    names = [name for _, name in schedule(WEEK)]
    assert names == ["day-1", "day-2", "midpoint", "day-4", "day-5", "day-6"]
    assert midpoint_s(WEEK) == 3 * DAY


def test_short_run_has_only_a_midpoint() -> None:
    """A 10-minute run gets one checkpoint at half time."""
    assert schedule(600.0) == [(300.0, "midpoint")]
    assert schedule(0.0) == []


def test_checkpoint_due_in_order_and_once() -> None:
    """Each checkpoint is due once, when its time has come, never before."""
    assert checkpoint_due(T0, WEEK, T0 + DAY - 1, []) is None
    assert checkpoint_due(T0, WEEK, T0 + DAY, []) == "day-1"
    assert checkpoint_due(T0, WEEK, T0 + DAY + 5, ["day-1"]) is None
    assert checkpoint_due(T0, WEEK, T0 + 3 * DAY, ["day-1", "day-2"]) == "midpoint"
    assert (
        checkpoint_due(
            T0, WEEK, T0 + WEEK, ["day-1", "day-2", "midpoint", "day-4", "day-5", "day-6"]
        )
        is None
    )


def test_checkpoint_after_a_pause_skips_stale_days() -> None:
    """After soakd was down for days, only the latest daily checkpoint is written."""
    now = T0 + 2.5 * DAY
    assert checkpoint_due(T0, WEEK, now, []) == "day-2"
    assert checkpoint_due(T0, WEEK, now, ["day-2"]) is None
    later = T0 + 4.2 * DAY
    assert checkpoint_due(T0, WEEK, later, ["day-2"]) == "midpoint"
    assert checkpoint_due(T0, WEEK, later, ["day-2", "midpoint"]) == "day-4"


def test_lttb_keeps_a_single_spike() -> None:
    """A one-sample spike in 600k points survives downsampling to 1000 points."""
    n = 600_000
    xs = array("d", (float(i) for i in range(n)))
    ys = array("d", (math.sin(i / 3000.0) for i in range(n)))
    ys[123_457] = 50.0
    ys[400_001] = -50.0
    pts = downsample(xs, ys, 1000)
    assert len(pts) <= 1002
    assert (123_457.0, 50.0) in pts
    assert (400_001.0, -50.0) in pts
    assert pts[0][0] == 0.0
    assert pts[-1][0] == n - 1


def test_downsample_skips_nan() -> None:
    """Unreadable samples (NaN) are left out, not plotted as zero."""
    xs = [0.0, 1.0, 2.0, 3.0]
    ys = [1.0, float("nan"), 3.0, 4.0]
    assert downsample(xs, ys, 10) == [(0.0, 1.0), (2.0, 3.0), (3.0, 4.0)]
    assert downsample([], [], 10) == []


@given(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=300), st.integers(3, 50))
@settings(max_examples=60, deadline=None)
def test_lttb_indices_ascending_bounded(ys: list[float], threshold: int) -> None:
    """LTTB picks ascending indices, keeps both ends and never more than asked."""
    xs = [float(i) for i in range(len(ys))]
    idx = lttb(xs, ys, threshold)
    assert idx == sorted(set(idx))
    assert len(idx) <= max(threshold, len(ys) if len(ys) <= threshold else threshold)
    if ys:
        assert idx[0] == 0
        assert idx[-1] == len(ys) - 1


def _blobs(k: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(k):
        h = Histogram()
        for _ in range(rng.randint(0, 500)):
            h.record_ns(int(rng.lognormvariate(14.0, 1.2)))
        out.append(h.encode())
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merger_matches_soakd_stats(seed: int) -> None:
    """The fast merger gives exactly soakd.stats' percentiles, max and mean."""
    blobs = _blobs(40, seed)
    assert merge(blobs).summary() == LatencySummary.of(merge_blobs(blobs))


def test_merger_of_mergers_equals_one_merge() -> None:
    """Merging window mergers into a total equals merging every blob at once."""
    blobs = _blobs(30, 9)
    total = Merger()
    for i in range(0, 30, 7):
        w = merge(blobs[i : i + 7])
        total.add_merger(w)
    assert total.summary() == merge(blobs).summary()
    total.reset()
    assert total.count == 0
    assert total.percentiles_ms((99.0,)) == (0.0,)


def test_merger_accepts_other_layouts() -> None:
    """A blob with another range/precision is merged exactly through the slow path."""
    from hdrh.histogram import HdrHistogram

    other = HdrHistogram(1, 60_000_000, 2)
    for v in (1000, 2000, 3000, 50_000):
        other.record_value(v)
    mine = Histogram()
    for us in (10, 20, 30):
        mine.record_ns(us * 1000)
    m = merge([mine.encode(), other.encode()])
    assert m.count == 7
    assert m.max_ms() == pytest.approx(50.0, rel=0.01)
    assert m.percentiles_ms((50.0,))[0] == pytest.approx(1.0, rel=0.01)


def test_merger_rejects_garbage() -> None:
    """An undecodable blob raises BlobError, not a crash deep in C."""
    with pytest.raises(BlobError):
        merge([b"not a histogram"])


def test_chart_svg_is_well_formed_with_data() -> None:
    """A rendered chart is valid XML with one data path per series and log ticks."""
    pts = [(T0 + i * 60.0, 1.0 + i % 7) for i in range(100)]
    svg = render(
        Chart(
            "c1",
            "t <&>",
            "ms",
            T0,
            T0 + 6000.0,
            [Series("P99", pts, "#000"), Series("empty", [], "#111")],
            y_log=True,
        )
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f"{ns}path")
    assert len(paths) == 1
    assert paths[0].get("d", "").startswith("M")
    assert paths[0].get("d", "").count("L") == 99


def test_nice_ticks_are_round() -> None:
    """Axis ticks are round numbers covering the range."""
    assert nice_ticks(0.0, 10.0) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    ticks = nice_ticks(1183.4, 1214.9)
    assert all(t == round(t) for t in ticks)
    assert ticks[0] >= 1183.4
    assert ticks[-1] <= 1214.9
