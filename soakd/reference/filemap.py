"""A file-backed mapping per space: resident memory that is page cache, not heap.

Engram maps a sparse ``warm_tier.dat`` of 3.1 GB per space (engram-api.md §7);
once its pages are touched they count in the process's RSS as ``RssFile``
while ``RssAnon`` stays small, and the kernel can drop them at will. This
knob does the same: a sparse file of N bytes per space, mapped shared and
read through, so a client sees RSS in the gigabytes without any heap growth
and without N bytes of disk (holes read as zero pages).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import time
from pathlib import Path

import structlog

log = structlog.get_logger()

#: madvise(MADV_POPULATE_READ) (Linux 5.14): faults every page in one call.
_MADV_POPULATE_READ = 22
_PAGE = mmap.PAGESIZE
#: Read through this much at a time when filling gradually.
_FILL_CHUNK = 16 * 1024 * 1024


class FileMaps:
    """One sparse mapped file per space, kept until :meth:`close`."""

    def __init__(self, size_bytes: int, directory: Path | None, fill_s: float = 0.0) -> None:
        self.size_bytes = size_bytes
        # Spread the reading over this long (0: at once): page cache that keeps growing
        # as a real server's touched warm tier does, while its heap stays flat.
        self.fill_s = fill_s
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="soakd-ref-warm-")
            directory = Path(self._owned_dir.name)
        self._dir = directory
        self._maps: dict[str, mmap.mmap] = {}

    def map_space(self, space_id: str) -> None:
        """Map (and read through) the space's file; BLOCKING (seconds per GB)."""
        if self.size_bytes <= 0 or space_id in self._maps:
            return
        folder = self._dir / space_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "warm_tier.dat"
        with open(path, "ab") as f:  # sparse: extends without writing a block
            f.truncate(self.size_bytes)
        fd = os.open(path, os.O_RDONLY)
        try:
            mapped = mmap.mmap(fd, self.size_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._maps[space_id] = mapped
        chunks = range(0, self.size_bytes, _FILL_CHUNK)
        pause_s = self.fill_s / max(1, len(chunks))
        for start in chunks:
            if self._maps.get(space_id) is not mapped:  # closed meanwhile: stop reading
                return
            length = min(_FILL_CHUNK, self.size_bytes - start)
            try:
                mapped.madvise(_MADV_POPULATE_READ, start, length)
            except OSError:  # an older kernel: touch one byte a page
                for offset in range(start, start + length, _PAGE):
                    mapped[offset]
            if pause_s > 0:
                time.sleep(pause_s)  # a worker thread, never the event loop
        log.info("warm tier mapped", space=space_id, bytes=self.size_bytes)

    def close(self) -> None:
        maps, self._maps = list(self._maps.values()), {}
        for mapped in maps:
            with contextlib.suppress(BufferError, ValueError):
                mapped.close()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
