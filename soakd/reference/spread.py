"""The SPREAD query: Engram's grammar, and a real spreading activation over a space.

Grammar: ``SPREAD FROM <id> [MAX_HOPS n] [DECAY d] [THRESHOLD t]``; keywords are
case-insensitive, clauses come in any order, unknown words (``HOPS 3``) are
skipped silently as Engram's parser does, and MAX_HOPS >= 7 is "too complex".

Activation: the source starts at 1.0; each hop passes ``a * (1 - DECAY) * w / W``
to each neighbour (``w`` the link weight, ``W`` the sum of the node's link
weights, i.e. activation is shared out, not copied), and a node joins the result
only while what reaches it is >= THRESHOLD. Because activation is shared out, the
number of nodes above a threshold ``t`` per hop is at most ~1/t; a hard cap of
MAX_VISITED nodes bounds pathological thresholds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from soakd.reference.space import Memory, MemorySpace

DEFAULT_MAX_HOPS = 3
DEFAULT_DECAY = 0.1
DEFAULT_THRESHOLD = 0.01
MAX_ALLOWED_HOPS = 6
MAX_VISITED = 10_000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OTHER_VERBS = {"RECALL", "PREDICT", "IMAGINE", "CONSOLIDATE"}


class QueryError(Exception):
    """A query Engram would reject; carries status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SpreadQuery:
    """A parsed SPREAD query."""

    source: str
    max_hops: int = DEFAULT_MAX_HOPS
    decay: float = DEFAULT_DECAY
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Activated:
    """A memory reached by spreading, with its activation and hop count."""

    memory: Memory
    activation: float
    hops: int


def parse_query(text: str) -> SpreadQuery:
    """Parse a query text; only SPREAD is executable here."""
    tokens = text.split()
    if not tokens:
        raise QueryError(400, "BAD_REQUEST", "Query parse error: empty query")
    verb = tokens[0].upper()
    if verb in _OTHER_VERBS:
        raise QueryError(501, "NOT_IMPLEMENTED", f"{verb} is not supported by this server")
    if verb != "SPREAD":
        raise QueryError(400, "BAD_REQUEST", f"Query parse error: unknown keyword {tokens[0]!r}")
    if len(tokens) < 3 or tokens[1].upper() != "FROM":
        raise QueryError(400, "BAD_REQUEST", "Query parse error: expected SPREAD FROM <node>")
    source = tokens[2]
    if not _IDENT.match(source):
        raise QueryError(
            400, "BAD_REQUEST", f"Query parse error: expected identifier, found {source!r}"
        )
    values: dict[str, str] = {}
    i = 3
    while i < len(tokens):
        key = tokens[i].upper()
        if key in ("MAX_HOPS", "DECAY", "THRESHOLD"):
            if i + 1 >= len(tokens):
                raise QueryError(400, "BAD_REQUEST", f"Query parse error: {key} needs a value")
            values[key] = tokens[i + 1]
            i += 2
        else:
            i += 1  # Engram skips words it does not know (e.g. "HOPS 3")
    return _validated(source, values)


def _validated(source: str, values: dict[str, str]) -> SpreadQuery:
    try:
        hops = int(values.get("MAX_HOPS", DEFAULT_MAX_HOPS))
        decay = float(values.get("DECAY", DEFAULT_DECAY))
        threshold = float(values.get("THRESHOLD", DEFAULT_THRESHOLD))
    except ValueError as exc:
        raise QueryError(400, "BAD_REQUEST", f"Query parse error: {exc}") from None
    if hops > MAX_ALLOWED_HOPS:
        raise QueryError(
            400,
            "BAD_REQUEST",
            f"Query too complex: MAX_HOPS {hops} exceeds the limit of {MAX_ALLOWED_HOPS}",
        )
    if hops < 0 or not 0.0 <= decay <= 1.0 or not 0.0 <= threshold <= 1.0:
        raise QueryError(
            400,
            "BAD_REQUEST",
            "Query validation error: MAX_HOPS >= 0, DECAY and THRESHOLD in [0,1]",
        )
    return SpreadQuery(source, hops, decay, threshold)


def spread(space: MemorySpace, query: SpreadQuery) -> list[Activated]:
    """Spread activation from the source; return it and what it reached, most activated first."""
    source = space.get(query.source)
    if source is None:
        return []
    best: dict[int, Activated] = {source.uid: Activated(source, 1.0, 0)}
    frontier = [(source, 1.0)]
    for hop in range(1, query.max_hops + 1):
        gained: dict[int, tuple[Memory, float]] = {}
        for node, act in frontier:
            links = space.neighbours(node)
            total = sum(w for _, w in links)
            if total <= 0.0:
                continue
            for other, weight in links:
                passed = act * (1.0 - query.decay) * weight / total
                if passed < query.threshold:
                    continue
                prev = gained.get(other.uid)
                gained[other.uid] = (other, passed + (prev[1] if prev else 0.0))
        frontier = []
        for uid, (memory, act) in gained.items():
            known = best.get(uid)
            if known is None or act > known.activation:
                best[uid] = Activated(memory, act, hop if known is None else known.hops)
                frontier.append((memory, act))
            if len(best) >= MAX_VISITED:
                break
        if not frontier or len(best) >= MAX_VISITED:
            break
    # The source is part of the result, as in Engram (activation 1.0, 0 hops).
    return sorted(best.values(), key=lambda a: -a.activation)
