"""Request builders for the measured operations: pure, seeded, no I/O.

Everything a request carries is a function of ``(seed, run_tag, k)``, so soakd
never keeps what it wrote: a read-back recomputes the expected content from
the memory ID alone (:meth:`Workload.expected_content`).

Embeddings are 768 uniform int16 draws, unit-normalised. They are not
Gaussian (not isotropic), which does not matter here: what matters is that
two of them have a cosine near 0 (standard deviation ~0.036 for 768
dimensions), far below Engram's silent de-duplication threshold of 0.95
(engram-api.md §4). Drawing bytes is ~4x faster than 768 ``gauss()`` calls
(~75 us against ~330 us per vector on this machine). Floats are printed with
6 significant digits, which keeps the cosine intact, halves the JSON body and
keeps a recall URL near 9 KB.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import random
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from soakd.spec.model import RecallOptions, SpreadOptions

#: Engram rejects any other embedding length with a 400.
EMBEDDING_DIM = 768

#: Stream numbers keep the store, recall and spread draws of one k apart.
_STREAM_STORE = 1
_STREAM_RECALL = 2
_STREAM_SPREAD = 3

_NON_IDENT = re.compile(r"[^A-Za-z0-9_]")
_CHECKSUM_SEP = " sha="

#: Words for content and text recall; Engram's text recall needs something to match.
_WORDS: tuple[str, ...] = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "glacier", "harbor",
    "island", "juniper", "kelp", "lagoon", "meadow", "nebula", "orchard", "prairie",
    "quartz", "river", "summit", "tundra", "umber", "valley", "willow", "xenon",
    "yarrow", "zephyr", "canyon", "dune", "estuary", "forest", "grove", "heath",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One ``POST /api/v1/memories/remember``; ``body`` is the JSON, serialised once."""

    space: str
    memory_id: str
    content: str
    embedding: tuple[float, ...]  # unrounded; the body carries them at 6 significant digits
    k: int
    body: bytes


@dataclass(frozen=True, slots=True)
class RecallRequest:
    """One ``GET /api/v1/memories/recall``; ``query_string`` is already URL-encoded."""

    space: str
    query_string: str
    k: int
    by: str  # "embedding" | "text"


@dataclass(frozen=True, slots=True)
class SpreadRequest:
    """One ``POST /api/v1/query`` with a SPREAD query starting at a stored memory."""

    space: str
    source_id: str
    query_text: str
    k: int = 0

    @property
    def body(self) -> bytes:
        """The JSON body; the space goes in the body too (the query route reads it first)."""
        return _json_object({"query_text": self.query_text, "memory_space_id": self.space})


def space_names(n: int) -> list[str]:
    """``space_01`` .. ``space_NN`` (zero-padded to at least two digits)."""
    if n < 1:
        raise ValueError(f"need at least one space, got {n}")
    width = max(2, len(str(n)))
    return [f"space_{i:0{width}d}" for i in range(1, n + 1)]


def sanitize_tag(run_tag: str) -> str:
    """Make ``run_tag`` usable inside an identifier ``[A-Za-z0-9_]``, never empty."""
    return _NON_IDENT.sub("_", run_tag) or "run"


def plain_number(x: float) -> str:
    """``x`` without exponent notation (a query parser may not take ``1e-05``)."""
    text = f"{x:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def checksum(text: str) -> str:
    """First 16 hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_content(content: str) -> tuple[str, str] | None:
    """Split stored content into (body, embedded checksum); ``None`` if it carries none."""
    body, sep, digest = content.rpartition(_CHECKSUM_SEP)
    if not sep:
        return None
    return body, digest


def content_is_self_consistent(content: str) -> bool:
    """True when the checksum inside ``content`` matches the rest of it."""
    parts = split_content(content)
    return parts is not None and checksum(parts[0]) == parts[1]


def unit_vector(seed_text: str) -> list[float]:
    """A unit-normalised 768-d vector drawn from ``seed_text`` (uniform int16 components)."""
    raw = random.Random(seed_text).randbytes(EMBEDDING_DIM * 2)
    comps = array.array("h")
    comps.frombytes(raw)
    norm_sq = sum(x * x for x in comps)
    if norm_sq == 0:  # 768 zero draws: practically impossible, but never divide by zero
        return [1.0] + [0.0] * (EMBEDDING_DIM - 1)
    scale = 1.0 / math.sqrt(norm_sq)
    return [x * scale for x in comps]


#: One %-format over the whole vector is ~30 % faster than joining 768 formatted floats.
_FLOATS_FORMAT = ",".join(["%.6g"] * EMBEDDING_DIM)


def format_floats(values: Sequence[float]) -> str:
    """``a,b,c`` with 6 significant digits (enough to keep the cosine; see module doc)."""
    if len(values) == EMBEDDING_DIM:
        return _FLOATS_FORMAT % tuple(values)
    return ",".join(["%.6g" % x for x in values])  # noqa: UP031 - %-format is the fastest here


def _json_string(text: str) -> str:
    return json.dumps(text)  # C-fast, and escapes whatever a tag or space name holds


def _json_object(fields: dict[str, str]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


class Workload:
    """Builds every measured request of a run from ``(seed, run_tag, k)``.

    ``confirm_stored`` remembers, per space, a bounded ring of IDs that Engram
    answered 201 for; SPREAD starts from one of them.
    """

    def __init__(  # noqa: PLR0917 - the signature the daemon was promised
        self,
        seed: int,
        run_tag: str,
        spaces: Sequence[str],
        recall: RecallOptions,
        spread: SpreadOptions,
        recent_ids_per_space: int = 1024,
    ) -> None:
        if not spaces:
            raise ValueError("a workload needs at least one space")
        self.seed = seed
        self.tag = sanitize_tag(run_tag)
        self.spaces: tuple[str, ...] = tuple(spaces)
        self.recall_options = recall
        self.spread_options = spread
        self._id_prefix = f"soak_{self.tag}_"
        self._recent: dict[str, deque[str]] = {
            s: deque(maxlen=max(1, recent_ids_per_space)) for s in self.spaces
        }
        # The spread clauses never change during a run: build them once.
        self._spread_tail = (
            f" MAX_HOPS {spread.max_hops} DECAY {plain_number(spread.decay)}"
            f" THRESHOLD {plain_number(spread.threshold)}"
        )

    # -- store -------------------------------------------------------------------

    def memory_id(self, k: int) -> str:
        """The ID of the ``k``-th store; an identifier, so SPREAD can start from it."""
        return f"{self._id_prefix}{k}"

    def k_of(self, memory_id: str) -> int | None:
        """Invert :meth:`memory_id`; ``None`` for an ID this workload never made."""
        if not memory_id.startswith(self._id_prefix):
            return None
        digits = memory_id[len(self._id_prefix) :]
        if not digits.isascii() or not digits.isdigit():
            return None
        return int(digits)

    def content_body(self, k: int) -> str:
        """The store's content without its checksum suffix."""
        rnd = random.Random(f"{self.seed}:{_STREAM_STORE}:{k}:words")
        words = " ".join(rnd.choice(_WORDS) for _ in range(8))
        return f"soak k={k} seed={self.seed} tag={self.tag} {words}"

    def content(self, k: int) -> str:
        body = self.content_body(k)
        return f"{body}{_CHECKSUM_SEP}{checksum(body)}"

    def store(self, k: int) -> StoreRequest:
        space = self.spaces[k % len(self.spaces)]
        memory_id = self.memory_id(k)
        content = self.content(k)
        vec = unit_vector(f"{self.seed}:{_STREAM_STORE}:{k}")
        body = (
            f'{{"id":"{memory_id}","content":{_json_string(content)},'
            f'"embedding":[{format_floats(vec)}],"memory_space_id":{_json_string(space)}}}'
        ).encode()
        return StoreRequest(space, memory_id, content, tuple(vec), k, body)

    def expected_content(self, memory_id: str) -> str | None:
        """What a read-back of ``memory_id`` must return; ``None`` if not ours."""
        k = self.k_of(memory_id)
        return None if k is None else self.content(k)

    def expected_checksum(self, memory_id: str) -> str | None:
        """The checksum embedded in ``memory_id``'s content, recomputed from the ID alone."""
        k = self.k_of(memory_id)
        return None if k is None else checksum(self.content_body(k))

    def verify(self, memory_id: str, content: str) -> bool:
        """True when ``content`` is exactly what the store of ``memory_id`` wrote."""
        expected = self.expected_checksum(memory_id)
        parts = split_content(content)
        if expected is None or parts is None:
            return False
        body, digest = parts
        return digest == expected and checksum(body) == expected

    # -- recall ------------------------------------------------------------------

    def recall(self, k: int) -> RecallRequest:
        opts = self.recall_options
        space = self.spaces[k % len(self.spaces)]
        common = f"max_results={opts.max_results}&threshold={plain_number(opts.threshold)}"
        if opts.by == "text":
            rnd = random.Random(f"{self.seed}:{_STREAM_RECALL}:{k}:words")
            text = " ".join(rnd.choice(_WORDS) for _ in range(3))
            query = f"query={quote(text, safe='')}&{common}"
        else:
            vec = unit_vector(f"{self.seed}:{_STREAM_RECALL}:{k}")
            # Commas are legal in a query string; brackets are not, so encode them.
            query = f"embedding=%5B{format_floats(vec)}%5D&{common}"
        return RecallRequest(space, query, k, opts.by)

    # -- spread ------------------------------------------------------------------

    def confirm_stored(self, space: str, memory_id: str) -> None:
        """Remember an ID Engram acknowledged, as a future SPREAD source."""
        ring = self._recent.get(space)
        if ring is not None:
            ring.append(memory_id)

    def known_ids(self, space: str) -> int:
        ring = self._recent.get(space)
        return 0 if ring is None else len(ring)

    def spread(self, k: int) -> SpreadRequest | None:
        """A SPREAD from a recently stored ID; the next space that has one, else ``None``."""
        n = len(self.spaces)
        for step in range(n):
            space = self.spaces[(k + step) % n]
            ring = self._recent[space]
            if ring:
                # Cheap deterministic pick spread over the ring (no RNG per call).
                source = ring[(k * 2654435761) % len(ring)]
                return SpreadRequest(space, source, f"SPREAD FROM {source}{self._spread_tail}", k)
        return None
