"""Where events go: one list of sinks, built once per run, each told of every event.

The pieces that notice something (target, sampler, integrity, consolidation,
disk) emit an ``Event``; what to do with it is each sink's own business (the
run store's batch keeps it, the exporter counts some kinds, the log shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from soakd.model import Event, EventSink

log = structlog.get_logger("soakd.daemon")


class LogEvents:
    """Every event as one info log line."""

    def on_event(self, event: Event) -> None:
        log.info("event", kind=event.kind, message=event.message)


class EventFanout:
    """Delivers each event to every sink, in the order given."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self._sinks = tuple(sinks)

    def on_event(self, event: Event) -> None:
        for sink in self._sinks:
            sink.on_event(event)
