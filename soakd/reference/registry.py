"""The memory spaces of the server, created on demand or explicitly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from soakd.reference.space import MemorySpace


class SpaceRegistry:
    """Spaces by id; ``on_create`` lets consolidation start a schedule per space."""

    def __init__(
        self,
        capacity: int,
        data_dir: Path | None,
        on_create: Callable[[MemorySpace], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.data_dir = data_dir
        self._spaces: dict[str, MemorySpace] = {}
        self._on_create = on_create

    def set_on_create(self, hook: Callable[[MemorySpace], None]) -> None:
        """Install the hook, and run it for the spaces that already exist."""
        self._on_create = hook
        for space in self._spaces.values():
            hook(space)

    def get(self, space_id: str) -> MemorySpace | None:
        """An existing space."""
        return self._spaces.get(space_id)

    def get_or_create(self, space_id: str) -> MemorySpace:
        """An existing space, or a new empty one."""
        space = self._spaces.get(space_id)
        if space is None:
            space = MemorySpace(space_id, self.capacity, created_at=time.time())
            self.add(space)
        return space

    def add(self, space: MemorySpace) -> None:
        """Register a space (new, or loaded from the data dir)."""
        self._spaces[space.id] = space
        if self._on_create is not None:
            self._on_create(space)

    def persistence_root(self, space_id: str) -> str:
        """Where a space lives on disk (Engram reports this even when in memory)."""
        if self.data_dir is None:
            return f"memory://{space_id}"
        return str(self.data_dir / space_id)

    def __iter__(self) -> Iterator[MemorySpace]:
        return iter(list(self._spaces.values()))

    def __len__(self) -> int:
        return len(self._spaces)

    def total_memories(self) -> int:
        """Hot memories over every space."""
        return sum(len(s) for s in self._spaces.values())
