"""Consolidation cadence: observed by polling ``generated_at``, never triggered.

Engram publishes one consolidation snapshot per space; a new ``generated_at``
means a new run (engram-api.md §4). Per space the watcher:

- never polls before the first store into it (stock Engram caches whatever
  the first request builds, and an empty snapshot would stay forever);
- takes the first ``generated_at`` as a baseline (a run with no interval);
- records each later change as a run whose interval is the difference of
  Engram's own timestamps (not of when soakd happened to poll), with drift =
  interval - expected; ``consolidation_drift`` when ``|drift| > tolerance``;
- raises ``consolidation_stalled`` once per episode when a poll sent more than
  ``interval + tolerance`` after the last run (or after the first store, when
  none was ever seen: "no consolidation observed") still shows nothing new,
  and ``consolidation_recovered`` when a run appears again. A stall is
  therefore its own event, distinct from a drift.

Polls of the spaces are spread evenly over ``poll_interval_s``, at most one
outstanding per space.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from soakd.engram import EngramClient
from soakd.model import Clock, ConsolidationRun, Event, EventKind

log = structlog.get_logger(__name__)

#: Intervals kept for the median; min/max/count cover the whole run.
_INTERVALS_KEPT = 10_000
#: A first change after a resume spanning more than this many expected
#: intervals may hide runs soakd did not see: it becomes a new baseline.
_RESUME_GAP_FACTOR = 1.5


def parse_rfc3339(text: str) -> float | None:
    """UNIX seconds of an RFC 3339 timestamp (``Z``, offsets, fractions); ``None`` if not one.

    Sub-microsecond digits (Rust prints nanoseconds) are truncated; a
    timestamp without an offset is taken as UTC.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class IntervalSummary:
    """Measured run-to-run intervals across all spaces (seconds)."""

    count: int
    min_s: float | None
    p50_s: float | None
    max_s: float | None
    within_tolerance: int  # intervals with |drift| <= tolerance


class _SpaceState:
    """What the watcher knows about one space (mutable, private)."""

    __slots__ = (
        "anchor_ns",
        "first_store_ns",
        "last_generated",
        "last_generated_s",
        "last_poll_ns",
        "polling",
        "resumed",
        "runs",
        "stalled",
    )

    def __init__(self) -> None:
        self.first_store_ns: int | None = None  # gate: no poll before the first store
        self.last_generated: str | None = None
        self.last_generated_s: float | None = None
        # Monotonic estimate of when the last run happened; stalls are measured from it.
        self.anchor_ns: int | None = None
        self.last_poll_ns: int | None = None  # send time of the last poll that answered
        self.polling = False
        self.stalled = False
        self.resumed = False  # last_generated came from a previous soakd process
        self.runs = 0  # runs with an interval seen in this space


class ConsolidationWatcher:
    """Polls ``GET /api/v1/consolidations`` per space and reports cadence."""

    def __init__(
        self,
        client: EngramClient,
        spaces: Sequence[str],
        *,
        interval_s: float,
        poll_interval_s: float,
        tolerance_s: float,
        clock: Clock,
        on_run: Callable[[ConsolidationRun], None],
        on_event: Callable[[Event], None],
    ) -> None:
        if not spaces:
            raise ValueError("the consolidation watcher needs at least one space")
        self._client = client
        self._spaces = tuple(spaces)
        self.interval_s = interval_s
        self.tolerance_s = tolerance_s
        self._poll_ns = max(1, int(poll_interval_s * 1e9))
        # A poll may take longer than its slot, never longer than this.
        self._poll_timeout_s = min(30.0, max(2.0, 2 * poll_interval_s))
        self._stall_ns = int((interval_s + tolerance_s) * 1e9)
        self._clock = clock
        self._on_run = on_run
        self._on_event = on_event
        self._state = {s: _SpaceState() for s in self._spaces}
        self.runs_observed = 0  # runs with an interval (baselines excluded)
        self.baselines = 0
        self.max_drift_s = 0.0  # largest |drift| seen
        self.stalls = 0  # stall episodes, all spaces
        self.polls = 0
        self.poll_errors = 0
        self._intervals: deque[float] = deque(maxlen=_INTERVALS_KEPT)
        self._interval_count = 0
        self._interval_min = math.inf
        self._interval_max = -math.inf
        self._within = 0

    # -- inputs --------------------------------------------------------------------

    def note_store(self, space: str) -> None:
        """A store into ``space`` succeeded: from now on it may be polled."""
        st = self._state.get(space)
        if st is not None and st.first_store_ns is None:
            st.first_store_ns = self._clock.monotonic_ns()

    def on_event(self, event: Event) -> None:
        """An EventSink: a target restart starts every space's baseline afresh."""
        if event.kind == EventKind.TARGET_RESTART:
            self.note_target_restart()

    def note_target_restart(self) -> None:
        """The target restarted: its next snapshot starts a new baseline per space."""
        now = self._clock.monotonic_ns()
        for st in self._state.values():
            st.last_generated = None
            st.last_generated_s = None
            st.anchor_ns = None
            if st.first_store_ns is not None:
                st.first_store_ns = now

    def restore(self, runs: Sequence[ConsolidationRun]) -> None:
        """Resume: the runs a previous soakd process recorded, oldest first."""
        now_ns, now_wall = self._clock.monotonic_ns(), self._clock.wall()
        for run in runs:
            st = self._state.get(run.space)
            if st is None:
                continue
            st.last_generated, st.last_generated_s = run.generated_at, run.generated_s
            if run.interval_s is None:
                self.baselines += 1
            else:
                st.runs += 1
                self.runs_observed += 1
                self._record_interval(run.interval_s)
        for st in self._state.values():
            if st.last_generated_s is None:
                continue
            # These spaces were stored into before: polling them is safe.
            st.first_store_ns = st.first_store_ns if st.first_store_ns is not None else now_ns
            st.resumed = True
            age_ns = max(0.0, now_wall - st.last_generated_s) * 1e9
            st.anchor_ns = now_ns - int(age_ns)

    # -- what the report and the exporter read -------------------------------------

    @property
    def stalled_spaces(self) -> list[str]:
        return [s for s, st in self._state.items() if st.stalled]

    def interval_summary(self) -> IntervalSummary:
        if not self._interval_count:
            return IntervalSummary(0, None, None, None, 0)
        ordered = sorted(self._intervals)
        return IntervalSummary(
            self._interval_count,
            self._interval_min,
            ordered[len(ordered) // 2],
            self._interval_max,
            self._within,
        )

    @property
    def last_interval_s(self) -> float | None:
        """The most recent measured interval, any space."""
        return self._intervals[-1] if self._intervals else None

    @property
    def intervals(self) -> list[float]:
        """The most recent intervals (bounded), oldest first."""
        return list(self._intervals)

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Poll one space per slot (``poll_interval / spaces``) until cancelled."""
        slot_ns = max(1_000_000, self._poll_ns // len(self._spaces))
        tasks: set[asyncio.Task[None]] = set()
        next_ns = self._clock.monotonic_ns()
        index = 0
        try:
            while True:
                await self._clock.sleep_until(next_ns)
                space = self._spaces[index % len(self._spaces)]
                index += 1
                # Absolute slots, but never a burst of catch-up polls after a stall of the loop.
                next_ns = max(next_ns + slot_ns, self._clock.monotonic_ns())
                st = self._state[space]
                if st.first_store_ns is None or st.polling:
                    continue
                st.polling = True
                task = asyncio.create_task(self._poll(space, st))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, space: str, st: _SpaceState) -> None:
        try:
            sent_ns, sent_wall = self._clock.monotonic_ns(), self._clock.wall()
            generated_at, status = await self._client.consolidation_generated_at(
                space, timeout_s=self._poll_timeout_s
            )
            self.polls += 1
            if generated_at is None:
                self.poll_errors += 1
                if status is not None and status != 404:
                    log.debug("consolidation_poll_failed", space=space, status=status)
            elif generated_at != st.last_generated:
                self._new_snapshot(space, st, generated_at, sent_ns, sent_wall)
                st.last_poll_ns = sent_ns
                return
            else:
                st.last_poll_ns = sent_ns
            self._check_stall(space, st, sent_ns)
        except Exception:  # the watcher must outlive any surprise
            log.exception("consolidation_poll_crashed", space=space)
        finally:
            st.polling = False

    def _new_snapshot(
        self, space: str, st: _SpaceState, generated_at: str, sent_ns: int, sent_wall: float
    ) -> None:
        generated_s = parse_rfc3339(generated_at)
        if generated_s is None:
            self.poll_errors += 1
            log.warning("consolidation_bad_timestamp", space=space, generated_at=generated_at)
            return
        interval: float | None = None
        if st.last_generated_s is not None:
            interval = generated_s - st.last_generated_s
            if interval <= 0:
                interval = None  # time went backwards (a restore, a clock step): re-baseline
            elif st.resumed and interval > _RESUME_GAP_FACTOR * self.interval_s:
                interval = None  # soakd was away: runs may have been missed
        st.resumed = False
        st.anchor_ns = self._anchor(st, generated_s, sent_ns, sent_wall)
        st.last_generated, st.last_generated_s = generated_at, generated_s
        run = ConsolidationRun(space, self._clock.wall(), generated_at, generated_s, interval)
        if interval is None:
            self.baselines += 1
        else:
            st.runs += 1
            self.runs_observed += 1
            drift = self._record_interval(interval)
            if abs(drift) > self.tolerance_s:
                self._event(
                    EventKind.CONSOLIDATION_DRIFT,
                    f"{space}: consolidation ran after {interval:.1f}s, "
                    f"{drift:+.1f}s from the expected {self.interval_s:g}s",
                    space=space,
                    interval_s=round(interval, 3),
                    drift_s=round(drift, 3),
                    expected_s=self.interval_s,
                )
        if st.stalled:
            st.stalled = False
            self._event(
                EventKind.CONSOLIDATION_RECOVERED,
                f"{space}: consolidation observed again ({generated_at})",
                space=space,
                generated_at=generated_at,
            )
        self._on_run(run)

    def _anchor(self, st: _SpaceState, generated_s: float, sent_ns: int, sent_wall: float) -> int:
        """Monotonic estimate of when the run happened.

        Engram's clock and ours may differ, so the age from its timestamp is
        clamped to what is possible: after the previous answered poll (else
        within one expected interval).
        """
        age_ns = (sent_wall - generated_s) * 1e9
        limit_ns = (
            sent_ns - st.last_poll_ns if st.last_poll_ns is not None else self.interval_s * 1e9
        )
        return sent_ns - int(min(max(age_ns, 0.0), max(limit_ns, 0)))

    def _check_stall(self, space: str, st: _SpaceState, sent_ns: int) -> None:
        """At a poll that saw nothing new: has the space gone quiet for too long?"""
        since_ns = st.anchor_ns if st.anchor_ns is not None else st.first_store_ns
        if st.stalled or since_ns is None or sent_ns - since_ns <= self._stall_ns:
            return
        st.stalled = True
        self.stalls += 1
        quiet_s = (sent_ns - since_ns) / 1e9
        if st.last_generated is None:
            message = f"{space}: no consolidation observed {quiet_s:.0f}s after the first store"
        elif st.runs == 0:
            message = (
                f"{space}: no consolidation run observed since the first snapshot ({quiet_s:.0f}s)"
            )
        else:
            message = f"{space}: no consolidation run for {quiet_s:.0f}s"
        self._event(
            EventKind.CONSOLIDATION_STALLED,
            message,
            space=space,
            quiet_s=round(quiet_s, 3),
            expected_s=self.interval_s,
            tolerance_s=self.tolerance_s,
            ever_observed=st.runs > 0,
        )

    def _record_interval(self, interval: float) -> float:
        drift = interval - self.interval_s
        self._intervals.append(interval)
        self._interval_count += 1
        self._interval_min = min(self._interval_min, interval)
        self._interval_max = max(self._interval_max, interval)
        self.max_drift_s = max(self.max_drift_s, abs(drift))
        if abs(drift) <= self.tolerance_s:
            self._within += 1
        return drift

    def _event(self, kind: EventKind, message: str, **detail: object) -> None:
        log.info(kind, message=message)
        try:
            self._on_event(Event(self._clock.wall(), kind, message, detail))
        except Exception:  # a consumer's bug must not stop the watching
            log.exception("consolidation_event_sink_failed", kind=kind)
