"""Events go to one list of sinks built once (issue 19): each sink, in order, every event."""

from __future__ import annotations

from soakd.exporter import Exporter
from soakd.model import Event, EventKind
from soakd.sinks import EventFanout


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, EventKind]]) -> None:
        self.name, self.seen = name, seen

    def on_event(self, event: Event) -> None:
        self.seen.append((self.name, event.kind))


def test_every_sink_gets_every_event_in_the_order_given() -> None:
    seen: list[tuple[str, EventKind]] = []
    fanout = EventFanout((Recorder("batch", seen), Recorder("log", seen)))
    fanout.on_event(Event(1.0, EventKind.TARGET_CRASH, "exit -9"))
    fanout.on_event(Event(2.0, EventKind.DISK_LOW, "low"))
    assert seen == [
        ("batch", EventKind.TARGET_CRASH),
        ("log", EventKind.TARGET_CRASH),
        ("batch", EventKind.DISK_LOW),
        ("log", EventKind.DISK_LOW),
    ]


def test_the_exporter_as_a_sink_counts_crashes_restarts_and_stalls() -> None:
    exporter = Exporter(run_id="r", target="http://127.0.0.1:1", status=dict)
    for kind, detail in [
        (EventKind.TARGET_CRASH, {}),
        (EventKind.TARGET_RESTART, {}),
        (EventKind.TARGET_RESTART, {}),
        (EventKind.CONSOLIDATION_STALLED, {"space": "space_01"}),
        (EventKind.DISK_LOW, {}),
    ]:
        exporter.on_event(Event(1.0, kind, "", detail))
    text = exporter.exposition().decode()
    assert "soakd_target_crashes_total 1.0" in text
    assert "soakd_target_restarts_total 2.0" in text
    assert 'soakd_consolidation_stalls_total{space="space_01"} 1.0' in text
