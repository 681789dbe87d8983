"""Typed reading of composed YAML nodes, collecting problems instead of raising.

The loader walks the node tree itself (never ``yaml.load``), so every value
keeps its line number and YAML path. Each reader here returns the typed value,
or the caller's default after recording a :class:`~soakd.errors.Problem`; the
loader therefore always reaches the end of the file and reports every problem
at once. Nothing here knows the spec's schema: that lives in the section
modules.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from soakd.errors import Problem
from soakd.spec.model import Secret
from soakd.spec.units import parse_duration, parse_rate, parse_size

T = TypeVar("T")
U = TypeVar("U")

#: Past this many problems the rest are counted, not listed: a hostile file
#: must not turn the error message into a flood.
MAX_PROBLEMS = 100

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONSTRUCTOR = SafeConstructor()


class Ctx:
    """Where problems are collected while one spec is read."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.dropped = 0

    def add(self, path: str, node: yaml.Node | None, message: str) -> None:
        """Record a problem at ``path``, with the node's line when there is a node."""
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(path or "(top level)", message, line))

    @property
    def full(self) -> bool:
        """No more problems will be listed (only counted)."""
        return len(self.problems) >= MAX_PROBLEMS

    def all_problems(self) -> list[Problem]:
        """Every problem in file order (line), plus a count of any left unlisted."""
        ordered = sorted(self.problems, key=lambda p: p.line or 0)
        if not self.dropped:
            return ordered
        return [*ordered, Problem("(file)", f"{self.dropped} more problem(s) not listed")]


def join(path: str, key: str | int) -> str:
    """``workload`` + 1 -> ``workload[1]``; ``target`` + ``url`` -> ``target.url``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key.isprintable():  # a hostile key must not break the one-line message
        key = key.encode("unicode_escape").decode("ascii")
    if len(key) > 40:
        key = key[:37] + "..."
    return f"{path}.{key}" if path else key


def short(text: str, limit: int = 40) -> str:
    """Quote a value for a message without letting a hostile one flood it."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def scalar(node: yaml.Node) -> object:
    """The Python value of a scalar node, built by hand for the standard tags only."""
    construct = _CONSTRUCTOR.yaml_constructors.get(node.tag)
    if not isinstance(node, yaml.ScalarNode) or construct is None:
        raise ValueError(f"unsupported YAML tag {short(str(node.tag))}")
    try:
        return construct(_CONSTRUCTOR, node)
    except (ConstructorError, ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"bad value for tag {node.tag}: {exc}") from None


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"))


def describe(node: yaml.Node) -> str:
    """How a wrong value is named in a message: 'a list', 'the string 'x''..."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    try:
        value = scalar(node)
    except ValueError:
        return f"the value {short(str(node.value))} (tag {short(str(node.tag))})"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {short(str(node.value))}"
    if isinstance(value, str):
        return f"the string {short(value)}"
    if isinstance(value, date):
        return f"the date {short(str(node.value))}"
    return f"a {type(value).__name__}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'rate'?`` or nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- readers of one node --------------------------------------------------------------


def as_str(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    """A string; numbers and booleans are refused (YAML would have changed them)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return str(node.value)
    ctx.add(path, node, f"expected a string, got {describe(node)}")
    return None


def as_text(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    """Any plain scalar as the text written (for argv items and env values: ``8080``)."""
    if isinstance(node, yaml.ScalarNode) and not is_null(node):
        try:
            scalar(node)
        except ValueError as exc:
            ctx.add(path, node, str(exc))
            return None
        return str(node.value)
    ctx.add(path, node, f"expected a string, got {describe(node)}")
    return None


def _number(node: yaml.Node) -> float | None:
    if not isinstance(node, yaml.ScalarNode):
        return None
    try:
        value = scalar(node)
    except ValueError:
        return None
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e3" as a string; take what float() takes
            return float(value.strip())
    except (ValueError, OverflowError):  # OverflowError: an int beyond any float
        return None
    return None


def as_int(ctx: Ctx, node: yaml.Node, path: str, lo: int, hi: int) -> int | None:
    """A whole number within ``lo..hi``."""
    try:
        is_int = isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int")
        value = scalar(node) if is_int else None
    except ValueError:  # e.g. more digits than Python converts (4300)
        value = None
    if not isinstance(value, int) or isinstance(value, bool):
        ctx.add(path, node, f"expected a whole number, got {describe(node)}")
        return None
    if not lo <= value <= hi:
        ctx.add(path, node, f"must be between {lo} and {hi}, got {short(str(node.value))}")
        return None
    return value


def as_float(
    ctx: Ctx, node: yaml.Node, path: str, lo: float, hi: float, *, lo_open: bool = False
) -> float | None:
    """A finite number within ``lo..hi`` (``lo`` excluded when ``lo_open``)."""
    value = _number(node)
    if value is None or not math.isfinite(value):
        ctx.add(path, node, f"expected a number, got {describe(node)}")
        return None
    if value < lo or value > hi or (lo_open and value == lo):
        low = f"above {lo:g}" if lo_open else f"at least {lo:g}"
        ctx.add(path, node, f"must be {low} and at most {hi:g}, got {value:g}")
        return None
    return value


def _parsed(
    ctx: Ctx, node: yaml.Node, path: str, parse: Callable[[str | int | float], T], what: str
) -> T | None:
    if not isinstance(node, yaml.ScalarNode) or is_null(node):
        ctx.add(path, node, f"expected {what}, got {describe(node)}")
        return None
    try:
        value = scalar(node)
        if not isinstance(value, str | int | float):
            raise ValueError(f"expected {what}, got {describe(node)}")
        return parse(value)
    except ValueError as exc:
        ctx.add(path, node, str(exc))
        return None


def as_duration(
    ctx: Ctx,
    node: yaml.Node,
    path: str,
    *,
    minimum: float = 0.0,
    above_zero: bool = False,
    maximum: float = 366 * 86400.0,
) -> float | None:
    """Seconds, from ``"90s"`` or a bare number, within the bounds given."""
    value = _parsed(ctx, node, path, parse_duration, "a duration")
    if value is None:
        return None
    if above_zero and value <= 0:
        ctx.add(path, node, "must be above zero")
        return None
    if value < minimum or value > maximum:
        ctx.add(path, node, f"must be between {minimum:g}s and {maximum:g}s, got {value:g}s")
        return None
    return value


def as_rate(ctx: Ctx, node: yaml.Node, path: str, maximum: float) -> float | None:
    """Operations per second, above zero and at most ``maximum``."""
    value = _parsed(ctx, node, path, parse_rate, "a rate")
    if value is not None and value > maximum:
        ctx.add(path, node, f"must be at most {maximum:g} ops/s, got {value:g}")
        return None
    return value


def as_size(ctx: Ctx, node: yaml.Node, path: str) -> int | None:
    """Bytes, from ``"512MiB"``, ``"1GB"`` or a bare number."""
    return _parsed(ctx, node, path, parse_size, "a size")


def as_secret(ctx: Ctx, node: yaml.Node, path: str) -> Secret | None:
    """``{env: NAME}`` or ``{file: PATH}``; an inline value is refused without echoing it."""
    if isinstance(node, yaml.ScalarNode) and not is_null(node):
        ctx.add(
            path,
            node,
            "never inline a secret in the spec; write {env: NAME} or {file: PATH}",
        )
        return None
    section = Section(ctx, node, path, ("env", "file"))
    if not section.ok:
        return None
    env = section.string("env", None)
    file = section.string("file", None)
    if env is not None and not _ENV_NAME.match(env):
        ctx.add(join(path, "env"), section.node("env"), "not an environment variable name")
        return None
    if file is not None and not file.strip():
        ctx.add(join(path, "file"), section.node("file"), "must not be empty")
        return None
    if (env is None) == (file is None):
        if not section.own_problems:
            ctx.add(path, node, "give exactly one of 'env' or 'file'")
        return None
    return Secret(env=env, file=file)


def items(ctx: Ctx, node: yaml.Node, path: str, limit: int) -> Iterator[tuple[str, yaml.Node]]:
    """The (path, node) of each list item, the first ``limit`` only (bounds any walk)."""
    if not isinstance(node, yaml.SequenceNode):
        ctx.add(path, node, f"expected a list, got {describe(node)}")
        return
    if node.tag != _SEQ_TAG:
        ctx.add(path, node, f"unsupported YAML tag {short(str(node.tag))}")
        return
    if len(node.value) > limit:
        ctx.add(path, node, f"at most {limit} entries, got {len(node.value)}")
    for index, child in enumerate(node.value[:limit]):
        yield join(path, index), child


def key_text(ctx: Ctx, key: yaml.Node, path: str) -> str | None:
    """A mapping key as written; complex keys and merge keys are refused."""
    if not isinstance(key, yaml.ScalarNode):
        ctx.add(path, key, "keys must be plain names")
        return None
    if key.tag.endswith(":merge"):
        ctx.add(path, key, "YAML merge keys (<<) are not supported: write the keys out")
        return None
    return str(key.value)


# --- a mapping read key by key ------------------------------------------------------------


class Section:
    """A mapping node being read: unknown, duplicate and missing keys are problems."""

    def __init__(
        self,
        ctx: Ctx,
        node: yaml.Node | None,
        path: str,
        allowed: Iterable[str],
        *,
        required: Iterable[str] = (),
        elsewhere: Callable[[str], str | None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.mapping = node  # where problems about absent keys point
        self.entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        before = len(ctx.problems)
        self.own_problems = 0  # how many problems the keys themselves caused
        self.misspelt: set[str] = set()  # allowed keys some unknown key was close to
        allowed = tuple(allowed)
        self.ok = isinstance(node, yaml.MappingNode)
        if not isinstance(node, yaml.MappingNode):
            ctx.add(path, node, f"expected a mapping, got {describe(node) if node else 'nothing'}")
            return
        if node.tag != _MAP_TAG:  # !!set, !!omap, !!python/...: never what a spec means
            ctx.add(path, node, f"unsupported YAML tag {short(str(node.tag))}")
            self.ok = False
            return
        for key_node, value_node in node.value:
            key = key_text(ctx, key_node, path)
            if key is None:
                continue
            if key in self.entries:
                ctx.add(join(path, key), key_node, "duplicate key")
            elif key not in allowed:
                # difflib is the costly part of a hostile file: skip it once nothing is listed.
                close = [] if ctx.full else difflib.get_close_matches(key, allowed, 1, 0.6)
                self.misspelt.update(close)
                hint = elsewhere(key) if elsewhere else None
                suggestion = f"; did you mean {close[0]!r}?" if close else ""
                ctx.add(join(path, key), key_node, hint or "unknown key" + suggestion)
            else:
                self.entries[key] = (key_node, value_node)
        for key in required:
            if is_null(self.node(key)) and not self.misspelt_only(key):
                where = self.entries[key][0] if key in self.entries else node
                ctx.add(join(path, key), where, f"'{key}' is required")
        self.own_problems = len(ctx.problems) - before

    def misspelt_only(self, key: str) -> bool:
        """``key`` is absent but a misspelling of it was reported (no second problem)."""
        return key not in self.entries and key in self.misspelt

    def node(self, key: str) -> yaml.Node | None:
        """The value node, or None when the key is absent."""
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def present(self, key: str) -> yaml.Node | None:
        """The value node, or None when the key is absent or null (``target:`` alone)."""
        node = self.node(key)
        return None if is_null(node) else node

    def has(self, key: str) -> bool:
        """The key is present with a non-null value."""
        return not is_null(self.node(key))

    def at(self, key: str) -> str:
        return join(self.path, key)

    def read(self, key: str, default: T, reader: Callable[[yaml.Node, str], U | None]) -> U | T:
        """``reader(node, path)`` for a present, non-null key; else (or on a problem) default."""
        node = self.node(key)
        if is_null(node) or node is None:
            return default
        value = reader(node, self.at(key))
        return default if value is None else value

    def string(self, key: str, default: T) -> str | T:
        return self.read(key, default, lambda n, p: as_str(self.ctx, n, p))

    def integer(self, key: str, default: T, lo: int, hi: int) -> int | T:
        return self.read(key, default, lambda n, p: as_int(self.ctx, n, p, lo, hi))

    def number(
        self, key: str, default: T, lo: float, hi: float, *, lo_open: bool = False
    ) -> float | T:
        return self.read(
            key, default, lambda n, p: as_float(self.ctx, n, p, lo, hi, lo_open=lo_open)
        )

    def duration(
        self,
        key: str,
        default: T,
        *,
        minimum: float = 0.0,
        above_zero: bool = False,
        maximum: float = 366 * 86400.0,
    ) -> float | T:
        return self.read(
            key,
            default,
            lambda n, p: as_duration(
                self.ctx, n, p, minimum=minimum, above_zero=above_zero, maximum=maximum
            ),
        )

    def choice(self, key: str, default: T, choices: Iterable[str]) -> str | T:
        """One of ``choices`` (a did-you-mean when it is not)."""
        options = tuple(choices)

        def read(node: yaml.Node, path: str) -> str | None:
            value = as_str(self.ctx, node, path)
            if value is None or value in options:
                return value
            listed = ", ".join(options)
            message = f"must be one of {listed}; got {short(value)}"
            self.ctx.add(path, node, message + did_you_mean(value, options))
            return None

        return self.read(key, default, read)

    def secret(self, key: str) -> Secret | None:
        return self.read(key, None, lambda n, p: as_secret(self.ctx, n, p))
