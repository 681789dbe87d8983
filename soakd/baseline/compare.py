"""The regression gate: two baselines, per workload and operation, beyond noise or not.

A regression counts only when it is beyond the threshold *at 95 % confidence*:

- P99: the new P99's lower bound is above the old one's upper bound by more than
  the threshold (``new.p99_lo > old.p99_hi * (1 + t)``). Both bounds are the
  order-statistic 95 % bounds the baseline recorded; a P99 without an upper
  bound (too few requests) is not judged.
- Throughput: the new search's first *failing* rate is below the old one's
  highest *passing* rate by more than the threshold (``new.hi < old.lo * (1 - t)``):
  the true sustainable rates lie inside those brackets, so only brackets that
  do not overlap (after the threshold) say the target got slower.

An improvement is the mirror image. A workload or operation the old baseline
has and the new one lacks is *missing*, and fails the gate too: a gate that
cannot see a figure cannot vouch for it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from soakd.baseline.model import Baseline, Latency, Throughput, WorkloadKind


class Verdict(enum.StrEnum):
    SAME = "same"
    REGRESSION = "REGRESSION"
    IMPROVED = "improved"
    NOT_JUDGED = "not judged"
    MISSING = "MISSING"


FAILING = (Verdict.REGRESSION, Verdict.MISSING)


class CompareError(ValueError):
    """The two baselines cannot be compared (the message says why)."""


@dataclass(frozen=True)
class Row:
    workload: str
    op: str
    metric: str  # "P99 ms" or "throughput/s"
    old: str
    new: str
    change_pct: float | None
    verdict: Verdict
    why: str = ""


def parse_threshold(text: str) -> float:
    """``5%`` or ``5`` (percent) as a fraction; ValueError for anything else."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"--max-regression: expected a percentage like 5%, got {text!r}") from None
    if not 0 <= value < 100:
        raise ValueError(f"--max-regression: expected 0-100 %, got {text!r}")
    return value / 100.0


def _pct(old: float, new: float) -> float | None:
    return (new - old) / old * 100.0 if old > 0 else None


def _lat_cell(lat: Latency | None) -> str:
    if lat is None:
        return "n/a"
    return f"{lat.p99_ms:.3g} [{lat.p99_lo_ms:.3g}, {lat.p99_hi_ms:.3g}] n={lat.requests:,}"


def _thr_cell(thr: Throughput | None) -> str:
    if thr is None:
        return "n/a"
    hi = "∞" if thr.hi_per_s is None else f"{thr.hi_per_s:,.4g}"
    return f"{thr.per_s:,.4g} [{thr.lo_per_s:,.4g}, {hi})"


def judge_p99(old: Latency | None, new: Latency | None, t: float) -> tuple[Verdict, str]:
    if old is None:
        return Verdict.NOT_JUDGED, "no old P99"
    if new is None:
        return Verdict.REGRESSION, "the new baseline sustained no rate"
    if not (old.p99_bounded and new.p99_bounded):
        return Verdict.NOT_JUDGED, "too few requests to bound a P99"
    if new.p99_lo_ms > old.p99_hi_ms * (1.0 + t):
        return Verdict.REGRESSION, (
            f"new lower bound {new.p99_lo_ms:.3g} ms > old upper bound {old.p99_hi_ms:.3g} ms"
            f" + {t:.0%}"
        )
    if new.p99_hi_ms * (1.0 + t) < old.p99_lo_ms:
        return Verdict.IMPROVED, "new upper bound below old lower bound"
    return Verdict.SAME, ""


def judge_throughput(
    old: Throughput | None, new: Throughput | None, t: float
) -> tuple[Verdict, str]:
    if old is None or old.per_s <= 0:
        return Verdict.NOT_JUDGED, "no old throughput"
    if new is None:
        return Verdict.MISSING, "no new throughput"
    if new.hi_per_s is not None and new.hi_per_s < old.lo_per_s * (1.0 - t):
        return Verdict.REGRESSION, (
            f"new first failing rate {new.hi_per_s:,.4g}/s < old passing rate"
            f" {old.lo_per_s:,.4g}/s - {t:.0%}"
        )
    if old.hi_per_s is not None and new.lo_per_s * (1.0 - t) > old.hi_per_s:
        return Verdict.IMPROVED, "new passing rate above old failing rate"
    return Verdict.SAME, ""


def compare(old: Baseline, new: Baseline, threshold: float) -> list[Row]:
    if old.settings.scale != new.settings.scale:
        raise CompareError(
            f"the baselines measured different datasets: scale {old.settings.scale:g}"
            f" vs {new.settings.scale:g}"
        )
    rows: list[Row] = []
    for ow in old.workloads:
        nw = new.workload(ow.name)
        if nw is None:
            rows.append(Row(ow.name, "*", "*", "present", "absent", None, Verdict.MISSING))
            continue
        if ow.kind is WorkloadKind.MIXED:
            v, why = judge_throughput(ow.total, nw.total, threshold)
            change = _pct(ow.total.per_s, nw.total.per_s) if ow.total and nw.total else None
            cells = (_thr_cell(ow.total), _thr_cell(nw.total))
            rows.append(Row(ow.name, "all", "throughput/s", *cells, change, v, why))
        for oop in ow.ops:
            nop = next((o for o in nw.ops if o.op == oop.op), None)
            if nop is None:
                rows.append(Row(ow.name, oop.op, "*", "present", "absent", None, Verdict.MISSING))
                continue
            v, why = judge_p99(oop.latency, nop.latency, threshold)
            change = (
                _pct(oop.latency.p99_ms, nop.latency.p99_ms)
                if oop.latency and nop.latency
                else None
            )
            cells = (_lat_cell(oop.latency), _lat_cell(nop.latency))
            rows.append(Row(ow.name, oop.op, "P99 ms", *cells, change, v, why))
            if ow.kind is WorkloadKind.SIZE:
                v, why = judge_throughput(oop.throughput, nop.throughput, threshold)
                change = _pct(oop.throughput.per_s, nop.throughput.per_s)
                cells = (_thr_cell(oop.throughput), _thr_cell(nop.throughput))
                rows.append(Row(ow.name, oop.op, "throughput/s", *cells, change, v, why))
    return rows


#: Baselines begun further apart than this were taken in different sittings. The bounds are
#: one run's sampling bounds and cannot see a machine that drifted between the two
#: (docs/baseline.md, "The gate's hit rate").
SITTING_S = 15 * 60


def _began(b: Baseline) -> datetime | None:
    try:
        return datetime.fromisoformat(b.created_at)
    except ValueError:
        return None


def settings_notes(old: Baseline, new: Baseline) -> list[str]:
    """Settings that differ, and sittings far apart (figures taken differently compare less
    well)."""
    notes = []
    began = _began(old), _began(new)
    if began[0] is not None and began[1] is not None:
        apart = abs((began[1] - began[0]).total_seconds())
        if apart > SITTING_S:
            notes.append(
                f"taken {apart / 3600:.1f} h apart ({old.created_at} vs {new.created_at}):"
                " drift of the machine between sittings is not in the bounds; measure both"
                " builds in one sitting to gate on a small step (docs/baseline.md)"
            )
    for name in ("latency_share", "p99_ceiling_ms", "resolution", "step_seconds", "seed"):
        a, b = getattr(old.settings, name), getattr(new.settings, name)
        if a != b:
            notes.append(f"settings differ: {name} {a:g} (old) vs {b:g} (new)")
    if old.machine.cpu_model != new.machine.cpu_model:
        notes.append(f"machines differ: {old.machine.cpu_model} vs {new.machine.cpu_model}")
    return notes


def render_table(rows: list[Row], threshold: float, notes: list[str]) -> str:
    lines = [
        f"### Baseline comparison (regression = beyond {threshold:.0%} at 95 % confidence)",
        "",
        "| workload | operation | metric | old | new | change | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = "" if r.change_pct is None else f"{r.change_pct:+.1f} %"
        verdict = f"**{r.verdict.value}**" if r.verdict in FAILING else r.verdict.value
        if r.why and r.verdict is not Verdict.SAME:
            verdict += f": {r.why}"
        lines.append(
            f"| {r.workload} | {r.op} | {r.metric} | {r.old} | {r.new} | {change} | {verdict} |"
        )
    failing = [r for r in rows if r.verdict in FAILING]
    lines.append("")
    if failing:
        names = ", ".join(f"{r.workload}/{r.op} {r.metric}" for r in failing)
        lines.append(f"**{len(failing)} regression(s)**: {names}")
    else:
        lines.append(f"No regression beyond {threshold:.0%} at 95 % confidence.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
