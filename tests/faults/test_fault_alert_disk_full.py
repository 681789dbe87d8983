"""A disk full when an alert fires: the page goes out once the disk frees, exactly once.

The state dir lives on a 16 MiB tmpfs. soakd runs against the reference target
whose every SPREAD fails; the test waits until the store holds enough failed
SPREADs to fire ``spread_errors``, then fills the tmpfs before the first
evaluation (every 10 s for a 10-minute run). That evaluation fires the alert,
and its commit (alert states + history + outbox rows, one transaction) fails.
The test frees the disk: the next evaluation commits the kept transition and
the webhook gets the page, once.

Before issue 18 ``Daemon._evaluate`` only logged the failed ``submit`` ("the
engine re-submits firing alerts"); it does not (firing -> firing is no
transition), so the page was lost for good.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from webhook_sink import WebhookSink, receivers_yaml

from soakd.model import Op
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec, store_figure, wait_for

Spawn = Callable[..., "subprocess.Popen[bytes]"]
ALERT = "spread_errors"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root and mount rights), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True, timeout=30
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def _failed_spreads(state: Path) -> int:
    return store_figure(state, lambda s: sum(r.count - r.ok for r in s.intervals(Op.SPREAD)), 0)


def _log_events(err: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in err.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == event:
            out.append(doc)
    return out


@pytest.mark.slow
def test_a_page_whose_commit_hit_a_full_disk_goes_out_once_the_disk_frees(
    tmp_path: Path, spawn: Spawn, small_fs: Path
) -> None:
    """Disk full as the alert fires: no page while full; one page after; never two."""
    state, err = small_fs / "state", tmp_path / "stderr"
    filler = small_fs / "filler"
    with WebhookSink() as sink:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            soak_spec(
                free_port(),
                duration="10m",
                store=10,
                recall=5,
                spread=20,
                spaces=2,
                consolidation_interval=None,
                knobs=["--error-rate", "spread=1.0"],
                alerts=[f'{ALERT}: {{phrase: "spread error rate >50%", window: 60s}}'],
                extra=receivers_yaml(sink.url)
                + "sampling: {interval: 500ms, flush_interval: 200ms, stats_interval: 1s,"
                " min_free_disk: 1KiB}",
            )
        )
        proc = spawn(["run", str(spec), "--state-dir", str(state)], err)
        wait_for(lambda: _failed_spreads(state) >= 40, timeout_s=60, what="40 failed SPREADs")
        assert not _log_events(err, "alert"), "evaluated before the disk was filled: too slow"
        _fill(filler)

        def fired() -> bool:
            return any(e.get("rule") == ALERT for e in _log_events(err, "alert"))

        wait_for(fired, timeout_s=30, what="the alert to fire on a full disk")
        wait_for(
            lambda: _log_events(err, "alert_commit_failed"),
            timeout_s=10,
            what="the failed commit to be logged",
        )
        assert sink.notifications(ALERT) == [], "a page went out without its commit"
        filler.unlink()
        wait_for(lambda: _log_events(err, "alert_commit_recovered"), timeout_s=40, what="retry")
        wait_for(
            lambda: sink.notifications(ALERT), timeout_s=40, what="the page after the disk freed"
        )
        # SIGTERM: a final evaluation and alert flush on a free disk, still one page.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        pages = sink.notifications(ALERT)
    assert proc.returncode in (0, 1, 4), err.read_text()[-3000:]
    assert [n.status for n in pages] == ["firing"], pages
    store = RunStore.open(state, readonly=True)
    try:
        history = [t for t in store.alert_history() if t.rule == ALERT]
    finally:
        store.close()
    assert [t.new.value for t in history] == ["firing"]
