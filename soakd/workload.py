"""Request builders for the measured operations: pure, seeded, no I/O.

Everything a request carries is a function of ``(seed, run_tag, k)``, so soakd
never keeps what it wrote: a read-back recomputes the expected content from
the memory ID alone (:meth:`Workload.expected_content`).

Embeddings are the hot path: 768 floats in every store body and every recall
URL. So each embedding is three pre-printed 256-d *parts* from one pool of
``POOL_SIZE`` parts per run, and a body is a string concatenation. A seeded
bijection picks the parts, so no two embeddings of a run share all three; the
parts are built so that any two embeddings' cosine stays at most 0.6875 whatever
the seed, far below Engram's silent de-duplication at 0.95 (engram-api.md §4),
while a recall can still match. The construction, its proof and its costs are
in docs/perf-embeddings.md.

Content words come from a seeded 64-bit mix of ``k`` (no RNG per request);
text recall still draws its three words from a seeded ``random.Random``.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import random
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
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
#: All 1024 two-word phrases: four look-ups give a content's eight words.
_WORD_PAIRS: tuple[str, ...] = tuple(f"{_WORDS[i & 31]} {_WORDS[i >> 5]}" for i in range(1024))

# -- embedding parts (see the module docstring) -------------------------------------

#: Parts per embedding, and the dimension of each.
PARTS = 3
PART_DIM = EMBEDDING_DIM // PARTS
_BLOCKS = 16  # a part is 16 blocks of 16 coordinates (the affine plane over GF(16))
_SLOPES = 8  # slopes in use, of GF(16)'s 16: 8 x 16 intercepts x 16 sign patterns
#: Parts in a run's pool; the three digits of an index name three of them.
POOL_SIZE = _SLOPES * _BLOCKS * _BLOCKS
_DIGIT_BITS = 11
_DIGIT_MASK = (1 << _DIGIT_BITS) - 1
_HIGH_DIGIT_SHIFT = 2 * _DIGIT_BITS
INDEX_BITS = PARTS * _DIGIT_BITS  # 33: 2**33 indices, even for stores, odd for recalls
_INDEX_MASK = (1 << INDEX_BITS) - 1
#: Per stream, k below this map one to one; larger k fold into the last _K_RESERVED.
_K_RESERVED = 1 << 20
K_DIRECT = (1 << (INDEX_BITS - 1)) - _K_RESERVED
#: The largest |dot| of two distinct unit parts; the cosine bound follows from it.
PART_COHERENCE = 1.0 / 16.0
#: The largest cosine of two different embeddings of one run (before 6-digit rounding).
MAX_COSINE = (PARTS - 1 + PART_COHERENCE) / PARTS
_BASE_SEED = "soakd-parts-v1"  # fixed: the base pool never changes
_POOL_CACHE_SIZE = 2
_M64 = (1 << 64) - 1


def _gf16_mul(a: int, b: int) -> int:
    """Product in GF(16) = GF(2)[x] / (x^4 + x + 1)."""
    product = 0
    for _ in range(4):
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a & 0x10:
            a ^= 0x13
    return product


def _part_support(p: int) -> list[tuple[int, bool]]:
    """Part ``p``'s 16 non-zero coordinates (one per block) and whether each is negative."""
    slope, rest = divmod(p, _BLOCKS * _BLOCKS)
    intercept, signs = divmod(rest, _BLOCKS)
    return [
        (_BLOCKS * b + (intercept ^ _gf16_mul(slope, b)), bool((signs & b).bit_count() & 1))
        for b in range(_BLOCKS)
    ]


_PART_FORMAT = ",".join(["%.6g"] * PART_DIM)


def _base_part_texts() -> tuple[str, ...]:
    """The fixed pool: sparse code vectors, rotated, printed (~0.6 s, once per process)."""
    rnd = random.Random(_BASE_SEED)
    layers: list[list[tuple[int, int, float, float]]] = []
    for bit in range(PART_DIM.bit_length() - 1):  # 8 butterfly layers: all coordinates mix
        step, layer = 1 << bit, []
        for x in range(PART_DIM):
            if not x & step:
                angle = rnd.uniform(0.0, 2.0 * math.pi)
                layer.append((x, x | step, math.cos(angle), math.sin(angle)))
        layers.append(layer)
    value = 1.0 / (math.sqrt(_BLOCKS) * math.sqrt(PARTS))  # 16 entries: unit norm / sqrt(3)
    texts: list[str] = []
    chunk = _BLOCKS * _BLOCKS  # one slope at a time keeps the float lists small
    for first in range(0, POOL_SIZE, chunk):
        # Column-major: cols[x][i] is coordinate x of part first + i.
        cols = [[0.0] * chunk for _ in range(PART_DIM)]
        for i in range(chunk):
            for x, negative in _part_support(first + i):
                cols[x][i] = -value if negative else value
        for layer in layers:
            for x, y, c, s in layer:
                cx, cy = cols[x], cols[y]
                cols[x] = [c * u - s * v for u, v in zip(cx, cy, strict=True)]
                cols[y] = [s * u + c * v for u, v in zip(cx, cy, strict=True)]
        texts.extend(_print_part(row) for row in zip(*cols, strict=True))
    return tuple(texts)


def _print_part(values: tuple[float, ...]) -> str:
    """``values`` at 6 significant digits, the largest re-printed so the norm stays exact.

    Rounding 256 coordinates moves a part's squared norm by up to ~5e-7.
    Printing the largest coordinate in full (``repr``, ~17 digits) with that
    error taken out cancels it to ~1e-16; the change moves a dot by ~1e-7.
    """
    tokens = (_PART_FORMAT % values).split(",")
    printed = [float(t) for t in tokens]
    top = max(range(PART_DIM), key=lambda x: abs(printed[x]))
    excess = math.fsum(v * v for v in printed) - 1.0 / PARTS
    tokens[top] = repr(math.copysign(math.sqrt(printed[top] ** 2 - excess), printed[top]))
    return ",".join(tokens)


def _coordinate_permutation(seed: int, tag: str) -> tuple[int, ...]:
    return tuple(random.Random(f"soakd-coords:{seed}:{tag}").sample(range(PART_DIM), PART_DIM))


class PartPool:
    """A run's ``POOL_SIZE`` parts, each printed once as 256 comma-separated floats.

    ``texts[i]`` is part ``i``; ``coords`` is the permutation of the base pool's
    coordinates this pool was made with (coordinate ``x`` holds base coordinate
    ``coords[x]``).
    """

    __slots__ = ("coords", "texts")

    def __init__(self, texts: tuple[str, ...], coords: tuple[int, ...]) -> None:
        self.texts = texts
        self.coords = coords

    def text(self, parts: tuple[int, int, int]) -> str:
        """The embedding of ``parts`` as printed in a request: ``a,b,...`` (768 floats)."""
        t = self.texts
        return f"{t[parts[0]]},{t[parts[1]]},{t[parts[2]]}"

    def embedding(self, parts: tuple[int, int, int]) -> tuple[float, ...]:
        """The embedding of ``parts`` exactly as sent (6 significant digits)."""
        return tuple(map(float, self.text(parts).split(",")))

    def part(self, i: int) -> tuple[float, ...]:
        """Part ``i`` as sent: 256 floats of norm ``1/sqrt(3)``."""
        return tuple(map(float, self.texts[i].split(",")))


#: Recently used pools by (seed, tag). Not locked: soakd builds workloads on one thread.
_pools: OrderedDict[tuple[int, str], PartPool] = OrderedDict()


def part_pool(seed: int, tag: str) -> PartPool:
    """The pool for ``(seed, tag)``: derived from a cached pool, else from the base."""
    key = (seed, tag)
    pool = _pools.get(key)
    if pool is not None:
        _pools.move_to_end(key)
        return pool
    coords = _coordinate_permutation(seed, tag)
    if _pools:
        source = next(reversed(_pools.values()))
        source_texts, source_coords = source.texts, source.coords
    else:
        source_texts, source_coords = _base_part_texts(), tuple(range(PART_DIM))
    where = [0] * PART_DIM  # where[base coordinate] = its place in the source pool
    for place, base in enumerate(source_coords):
        where[base] = place
    pick = itemgetter(*[where[base] for base in coords])
    pool = PartPool(tuple(",".join(pick(text.split(","))) for text in source_texts), coords)
    _pools[key] = pool
    while len(_pools) > _POOL_CACHE_SIZE:
        _pools.popitem(last=False)
    return pool


def clear_pool_cache() -> None:
    """Forget every cached pool (the next one is built from the base again)."""
    _pools.clear()


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit integers that scatters nearby inputs."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class IndexMixer:
    """A seeded bijection of ``[0, 2**33)``: two rounds of odd multiply, add, xor-shift.

    Each step is invertible modulo ``2**33`` (an odd multiplier has an inverse,
    ``x ^= x >> r`` undoes itself from the top bits down), so the whole is: no
    two indices get the same three digits. Two rounds already scatter
    neighbouring ``k`` (they share a part no more often than random triples do).
    """

    mul: tuple[int, int]
    add: tuple[int, int]
    shift: tuple[int, int] = (16, 17)

    @classmethod
    def seeded(cls, seed: int, tag: str) -> IndexMixer:
        rnd = random.Random(f"soakd-index:{seed}:{tag}")
        m0, m1, a0, a1 = (rnd.getrandbits(INDEX_BITS) for _ in range(4))
        return cls((m0 | 1, m1 | 1), (a0, a1))

    def function(self) -> Callable[[int], int]:
        """The bijection as a closure over its constants (~0.25 us a call)."""
        (m0, m1), (a0, a1), (r0, r1) = self.mul, self.add, self.shift
        mask = _INDEX_MASK

        def mix(x: int) -> int:
            x = (x * m0 + a0) & mask
            x ^= x >> r0
            x = (x * m1 + a1) & mask
            return x ^ (x >> r1)

        return mix


def stream_slot(k: int) -> int:
    """Where ``k`` lands in a stream's ``2**32`` slots: itself if small, else the reserve."""
    return k if 0 <= k < K_DIRECT else K_DIRECT + k % _K_RESERVED


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One ``POST /api/v1/memories/remember``; ``body`` is the JSON, serialised once."""

    space: str
    memory_id: str
    content: str
    k: int
    body: bytes

    @property
    def embedding(self) -> tuple[float, ...]:
        """The 768 floats exactly as the body carries them (parsed from it on each access).

        Not kept as a field: a tuple of 768 floats per request would cost more
        than building the body.
        """
        values = json.loads(self.body)["embedding"]
        return tuple(float(x) for x in values)


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
    """A unit-normalised 768-d vector drawn from ``seed_text`` (uniform int16 components).

    Not on the request path any more (~75 us, plus ~100 us to print it); kept
    for callers that want an independent random vector.
    """
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


def _recall_tail(opts: RecallOptions) -> str:
    return f"max_results={opts.max_results}&threshold={plain_number(opts.threshold)}"


def _json_string(text: str) -> str:
    return json.dumps(text)  # C-fast, and escapes whatever a tag or space name holds


def _json_object(fields: dict[str, str]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


class Workload:
    """Builds every measured request of a run from ``(seed, run_tag, k)``.

    ``confirm_stored`` remembers, per space, a bounded ring of IDs that Engram
    answered 201 for; SPREAD starts from one of them. The run's part pool is
    built (or taken from the cache) here, so no timed request pays for it.
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
        # Everything a request body repeats, built once.
        self.pool = part_pool(seed, self.tag)
        self.mixer = IndexMixer.seeded(seed, self.tag)
        self._mix = self.mixer.function()
        self._word_key = random.Random(f"soakd-words:{seed}:{self.tag}").getrandbits(64)
        self._content_head = f" seed={seed} tag={self.tag} "
        self._space_json = tuple(_json_string(s) for s in self.spaces)
        self._recall_tail = (recall, _recall_tail(recall))

    # -- embeddings --------------------------------------------------------------

    def part_indices(self, k: int, *, recall: bool = False) -> tuple[int, int, int]:
        """The pool parts of store ``k``'s (or recall ``k``'s) embedding.

        Distinct for any two (stream, k) of a run while ``k < 2**32 - 2**20``
        (a bijection; see the module docstring); larger ``k`` share the last
        ``2**20`` slots.
        """
        x = self._mix(2 * stream_slot(k) + recall)
        return x & _DIGIT_MASK, (x >> _DIGIT_BITS) & _DIGIT_MASK, x >> _HIGH_DIGIT_SHIFT

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
        """The store's content without its checksum suffix (JSON-safe: no escapes needed)."""
        h = _mix64((k ^ self._word_key) & _M64)
        w = _WORD_PAIRS
        words = f"{w[h & 1023]} {w[(h >> 10) & 1023]} {w[(h >> 20) & 1023]} {w[(h >> 30) & 1023]}"
        return f"soak k={k}{self._content_head}{words}"

    def content(self, k: int) -> str:
        body = self.content_body(k)
        return f"{body}{_CHECKSUM_SEP}{checksum(body)}"

    def store(self, k: int) -> StoreRequest:
        i = k % len(self.spaces)
        memory_id = f"{self._id_prefix}{k}"
        content = self.content(k)
        a, b, c = self.part_indices(k)
        t = self.pool.texts
        # The ID and content are [A-Za-z0-9_ =-] only (the tag is sanitised): no JSON escapes.
        body = (
            f'{{"id":"{memory_id}","content":"{content}","embedding":[{t[a]},{t[b]},{t[c]}],'
            f'"memory_space_id":{self._space_json[i]}}}'
        ).encode()
        return StoreRequest(self.spaces[i], memory_id, content, k, body)

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
        if opts.by == "text":
            rnd = random.Random(f"{self.seed}:{_STREAM_RECALL}:{k}:words")
            text = " ".join(rnd.choice(_WORDS) for _ in range(3))
            return RecallRequest(
                space, f"query={quote(text, safe='')}&{_recall_tail(opts)}", k, "text"
            )
        tail_for, tail = self._recall_tail
        if opts is not tail_for:  # recall_options was replaced after __init__
            self._recall_tail = (opts, tail := _recall_tail(opts))
        a, b, c = self.part_indices(k, recall=True)
        t = self.pool.texts
        # Commas are legal in a query string; brackets are not, so encode them.
        query = f"embedding=%5B{t[a]},{t[b]},{t[c]}%5D&{tail}"
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
