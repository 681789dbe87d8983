"""The weekly-review view that ``soakd status`` prints, rendered from the /status JSON.

Input is the mapping the daemon serves on ``/status`` (and may also write to its
state dir). Keys read here, every one optional (a missing key renders as ``?``
rather than failing, so an older or newer daemon still gives a useful view):

* ``run_id``, ``status`` (running/completed/stopped), ``started_at`` (UNIX s),
  ``elapsed_s``, ``planned_s``, ``hours_done``, ``hours_planned``
* ``verdict_so_far``: ``"pass"`` | ``"fail"`` | ``"pending"``
* ``firing_alerts``: list of ``{alertname, severity, summary, since}`` (since: UNIX s)
* ``operations``: ``{op: {target_rate, achieved_rate, count, errors, dropped, p99_ms}}``
* ``target``: ``{pid, rss_bytes, restarts}``
* ``consolidation``: ``{runs_observed, last_interval_s, max_drift_s, stalls}``

The first line is the execution plan's weekly progress line,
``Soak test: C/168 hours complete``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

_UNKNOWN = "?"


def render_status(status: Mapping[str, object]) -> str:
    """Render the weekly-review text (ends with a newline)."""
    lines = [_progress_line(status), *_run_lines(status), ""]
    lines += _alert_lines(status.get("firing_alerts"))
    lines.append("")
    lines += _operation_lines(status.get("operations"))
    return "\n".join(lines) + "\n"


def status_line(status: Mapping[str, object]) -> str:
    """The one-line progress text for systemd's STATUS= (``systemctl status soakd``)."""
    hours = _progress_line(status).removeprefix("Soak test: ")
    verdict = str(status.get("verdict_so_far") or "pending")
    firing = len(_sequence(status.get("firing_alerts")))
    return f"{hours}, verdict {verdict}, {firing} alert{'s' if firing != 1 else ''} firing"


async def fetch_status(url: str, timeout_s: float = 5.0) -> dict[str, object]:
    """GET ``/status`` from a running soakd's exporter (``url`` is its base or /status URL)."""
    if not url.rstrip("/").endswith("/status"):
        url = url.rstrip("/") + "/status"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        resp.raise_for_status()
        data = await resp.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return data


def read_status_file(path: Path) -> dict[str, object]:
    """Load a status snapshot the daemon wrote (same JSON as /status)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


# -- pieces -----------------------------------------------------------------------------------


def _progress_line(st: Mapping[str, object]) -> str:
    done = _num(st.get("hours_done"))
    planned = _num(st.get("hours_planned"))
    if done is None and (elapsed := _num(st.get("elapsed_s"))) is not None:
        done = elapsed / 3600
    if planned is None and (planned_s := _num(st.get("planned_s"))) is not None:
        planned = planned_s / 3600
    line = f"Soak test: {_hours(done)}/{_hours(planned)} hours complete"
    if done is not None and planned:
        line += f" ({100 * done / planned:.1f} %)"
    return line


def _run_lines(st: Mapping[str, object]) -> list[str]:
    verdict = str(st.get("verdict_so_far") or "pending").upper()
    lines = [
        f"{'Run:':<16}{st.get('run_id', _UNKNOWN)} ({st.get('status', _UNKNOWN)}), "
        f"started {_when(st.get('started_at'))}",
        f"{'Verdict so far:':<16}{verdict}",
    ]
    target = _mapping(st.get("target"))
    if target:
        lines.append(
            f"{'Target:':<16}pid {target.get('pid', _UNKNOWN)}, "
            f"RSS {_bytes(_num(target.get('rss_bytes')))}, "
            f"restarts {target.get('restarts', _UNKNOWN)}"
        )
    cons = _mapping(st.get("consolidation"))
    if cons:
        lines.append(
            f"{'Consolidation:':<16}{cons.get('runs_observed', _UNKNOWN)} runs observed, "
            f"last interval {_fixed(_num(cons.get('last_interval_s')), 1)} s, "
            f"max drift {_fixed(_num(cons.get('max_drift_s')), 1)} s, "
            f"stalls {cons.get('stalls', _UNKNOWN)}"
        )
    return lines


def _alert_lines(raw: object) -> list[str]:
    alerts = [a for a in _sequence(raw) if isinstance(a, Mapping)]
    if not alerts:
        return ["Firing alerts: none"]
    lines = [f"Firing alerts ({len(alerts)}):"]
    for a in alerts:
        lines.append(
            f"  [{a.get('severity', _UNKNOWN)}] {a.get('alertname', _UNKNOWN)}"
            f"  since {_when(a.get('since'))}  {a.get('summary', '')}".rstrip()
        )
    return lines


def _operation_lines(raw: object) -> list[str]:
    ops = _mapping(raw)
    header = (
        f"{'operation':<10} {'target/s':>9} {'achieved/s':>10} {'count':>12} "
        f"{'errors':>8} {'dropped':>8} {'p99 ms':>9}"
    )
    lines = ["Operations:", header]
    if not ops:
        return [*lines, "  (no operations reported yet)"]
    for name, value in ops.items():
        o = _mapping(value)
        lines.append(
            f"{name!s:<10} {_fixed(_num(o.get('target_rate')), 1):>9} "
            f"{_fixed(_num(o.get('achieved_rate')), 1):>10} {_int(o.get('count')):>12} "
            f"{_int(o.get('errors')):>8} {_int(o.get('dropped')):>8} "
            f"{_fixed(_num(o.get('p99_ms')), 2):>9}"
        )
    return lines


# -- formatting helpers (tolerant of whatever JSON gives) -------------------------------------


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _mapping(v: object) -> Mapping[str, object]:
    return v if isinstance(v, Mapping) else {}


def _sequence(v: object) -> Sequence[object]:
    return v if isinstance(v, list | tuple) else ()


def _hours(h: float | None) -> str:
    if h is None:
        return _UNKNOWN
    return str(int(h)) if float(h).is_integer() else f"{h:.1f}"


def _fixed(v: float | None, digits: int) -> str:
    return _UNKNOWN if v is None else f"{v:.{digits}f}"


def _int(v: object) -> str:
    n = _num(v)
    return _UNKNOWN if n is None else str(int(n))


def _bytes(v: float | None) -> str:
    if v is None:
        return _UNKNOWN
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{int(v)} B"


def _when(v: object) -> str:
    t = _num(v)
    if t is None:
        return _UNKNOWN
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
