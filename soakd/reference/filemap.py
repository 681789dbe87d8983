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
from pathlib import Path

import structlog

log = structlog.get_logger()

#: madvise(MADV_POPULATE_READ) (Linux 5.14): faults every page in one call.
_MADV_POPULATE_READ = 22
_PAGE = mmap.PAGESIZE


class FileMaps:
    """One sparse mapped file per space, kept until :meth:`close`."""

    def __init__(self, size_bytes: int, directory: Path | None) -> None:
        self.size_bytes = size_bytes
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
        try:
            mapped.madvise(_MADV_POPULATE_READ)
        except OSError:  # an older kernel: touch one byte a page
            for offset in range(0, self.size_bytes, _PAGE):
                mapped[offset]
        self._maps[space_id] = mapped
        log.info("warm tier mapped", space=space_id, bytes=self.size_bytes)

    def close(self) -> None:
        for mapped in self._maps.values():
            with contextlib.suppress(BufferError, ValueError):
                mapped.close()
        self._maps.clear()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
