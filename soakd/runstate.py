"""Opening a state dir: a new run, or the resume of an interrupted one.

Resume rules (issue 4): the same ``run_id`` and original start; a gap event
covering the time soakd was away; a state dir written for another spec is
refused unless ``--new-run``, which archives the old run instead of deleting it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from soakd.errors import StartupError, UsageError
from soakd.model import Event, EventKind, RunInfo
from soakd.spec.model import Spec
from soakd.store import Batch, RunStore

#: Counter names kept in the run store's ``counters`` table.
NEXT_K = "next_k_{op}"
SEGMENT = "segment"


@dataclass(frozen=True)
class OpenedRun:
    store: RunStore
    info: RunInfo
    resumed: bool
    segment: int  # 0 for a new run, +1 for every resume
    gap_s: float  # how long soakd was away (0 for a new run)


def new_run_id(now: float) -> str:
    """Sortable and unique: UTC start time plus randomness."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(3)}"


def check_writable(state_dir: Path) -> None:
    """Fail early and clearly when the state dir cannot hold the run."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create state dir {state_dir}: {exc.strerror}") from exc
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise StartupError(
            f"state dir {state_dir} is not writable by this user (uid {os.getuid()});"
            " fix its ownership or pass another --state-dir"
        )


def _archive(state_dir: Path, old: RunInfo) -> Path:
    dest = state_dir / "previous" / old.run_id
    dest.mkdir(parents=True, exist_ok=True)
    for entry in state_dir.iterdir():
        if entry.name != "previous":
            shutil.move(entry, dest / entry.name)
    return dest


def open_run(
    spec: Spec, spec_text: str, state_dir: Path, *, now: float, new_run: bool = False
) -> OpenedRun:
    """Create or resume the run in ``state_dir`` (blocking; call off the loop)."""
    check_writable(state_dir)
    if RunStore.exists(state_dir):
        store = RunStore.open(state_dir)
        old = store.run_info()
        if new_run or old.status == "completed":
            if not new_run:
                store.close()
                raise UsageError(
                    f"{state_dir} holds run {old.run_id}, which completed; "
                    "pass --new-run to start another (the old one is archived)"
                )
            store.close()
            _archive(state_dir, old)
        elif old.spec_fingerprint != spec.fingerprint and old.spec_text != spec_text:
            # The same YAML text is the same plan even when this soakd parses it
            # into a different model (a new default, a new implicit rule): only a
            # changed spec is refused, not a changed soakd (issue 18).
            store.close()
            raise UsageError(
                f"{state_dir} holds run {old.run_id} of a different spec "
                f"(fingerprint {old.spec_fingerprint[:12]} != {spec.fingerprint[:12]}); "
                "use the spec it was started with, another --state-dir, or --new-run"
            )
        else:
            return _resume(store, old, now)
    info = RunInfo(
        run_id=new_run_id(now),
        spec_fingerprint=spec.fingerprint,
        spec_text=spec_text,
        started_at=now,
        planned_duration_s=spec.duration_s,
        target_url=spec.target.url,
    )
    store = RunStore.create(state_dir, info)
    store.write(Batch(events=[Event(now, EventKind.RUN_STARTED, f"run {info.run_id} started")]))
    return OpenedRun(store, info, resumed=False, segment=0, gap_s=0.0)


def _resume(store: RunStore, old: RunInfo, now: float) -> OpenedRun:
    counters = store.counters()
    segment = counters.get(SEGMENT, 0) + 1
    last = max(
        (t for t in (store.last_sample_time(), _last_event_time(store)) if t is not None),
        default=old.started_at,
    )
    gap_s = max(0.0, now - last)
    store.set_status("running", None)
    store.write(
        Batch(
            events=[
                Event(
                    now,
                    EventKind.GAP,
                    f"soakd was away for {gap_s:.1f} s; run {old.run_id} resumed",
                    {"from": last, "to": now, "gap_s": gap_s, "segment": segment},
                )
            ],
            counters={SEGMENT: segment},
        )
    )
    return OpenedRun(store, store.run_info(), resumed=True, segment=segment, gap_s=gap_s)


def _last_event_time(store: RunStore) -> float | None:
    events = store.events()
    return events[-1].t if events else None
