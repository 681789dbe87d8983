"""Suite-wide pytest hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

#: Modules whose async tests run on both loops: the HTTP client is written
#: against asyncio's Protocol API, and soakd itself runs it on uvloop, whose
#: transports behave differently in small ways (they are not even
#: asyncio.Transport subclasses).
_BOTH_LOOPS = ("test_http1.py", "test_engram.py")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
