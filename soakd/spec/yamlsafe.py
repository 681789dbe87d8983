"""Bytes to a YAML node tree, refusing hostile input before it can hurt.

Only the *compose* stage of PyYAML's SafeLoader runs here: no Python object
is ever constructed from the file, so tags such as ``!!python/object`` are
inert strings. On top of that: files over :data:`MAX_SPEC_BYTES` are refused
before any parsing, bytes must be UTF-8, aliases are counted in a first pass
over the parser's events (a "billion laughs" document needs many of them), and
nesting depth is capped there too so the recursive composer cannot blow the
stack. Every refusal becomes one
:class:`~soakd.errors.Problem` with a line number where one exists.
"""

from __future__ import annotations

import os

import yaml

from soakd.errors import Problem

MAX_SPEC_BYTES = 1024 * 1024
#: A spec has no real need for aliases; a few are allowed for shared snippets.
MAX_ALIASES = 16
#: The deepest a valid spec goes is about 5; this leaves room without recursion risk.
MAX_DEPTH = 64

FILE_PATH = "(file)"


class ComposeError(Exception):
    """The text could not be turned into a node tree; carries the one problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _LimitExceeded(yaml.YAMLError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# libyaml when present: composing 1 MiB takes ~1.5 s instead of ~10 s in pure Python.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scan(text: str) -> None:
    """Walk the event stream once, counting aliases and depth, before any node is built.

    An alias re-uses an already built node: cheap to compose, but every walk
    expands it, so their number is what makes a YAML bomb. Depth is checked
    here so neither composer (both recurse) ever goes deep.
    """
    loader = _LOADER(text)
    aliases = depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _LimitExceeded(
                        f"more than {MAX_ALIASES} YAML aliases (*name); refused as a possible "
                        "YAML bomb: write the values out",
                        _line(event),
                    )
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    message = f"nested deeper than {MAX_DEPTH} levels"
                    raise _LimitExceeded(message, _line(event))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 1


def read_spec_file(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, refusing anything over the size limit before reading it all."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_SPEC_BYTES:
                raise ComposeError(_too_big(size))
            # A FIFO or /dev/zero reports size 0: read one byte past the limit to know.
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise ComposeError(Problem(FILE_PATH, f"cannot read: {exc.strerror or exc}")) from None
    if len(data) > MAX_SPEC_BYTES:
        raise ComposeError(_too_big(len(data)))
    return data


def _too_big(size: int) -> Problem:
    return Problem(
        FILE_PATH, f"file is {size} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes (1 MiB)"
    )


def decode_spec(data: bytes) -> str:
    """UTF-8 text (a BOM is allowed); any other encoding is a problem with its line."""
    if len(data) > MAX_SPEC_BYTES:
        raise ComposeError(_too_big(len(data)))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ComposeError(
            Problem(FILE_PATH, f"not UTF-8: byte 0x{data[exc.start]:02x} is invalid", line)
        ) from None


def compose(text: str) -> yaml.Node:
    """The single document's root node; ComposeError for anything we refuse."""
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise ComposeError(_too_big(len(text.encode("utf-8", "surrogatepass"))))
    _check_unicode(text)
    loader: yaml.SafeLoader | None = None
    try:
        _scan(text)
        loader = _LOADER(text)
        node = loader.get_single_node()
    except _LimitExceeded as exc:
        raise ComposeError(Problem(FILE_PATH, exc.message, exc.line)) from None
    except yaml.MarkedYAMLError as exc:
        raise ComposeError(_syntax_problem(exc)) from None
    except yaml.reader.ReaderError as exc:
        line = _reader_line(text, exc.position)
        raise ComposeError(
            Problem(FILE_PATH, f"character {exc.character!r} is not allowed in YAML", line)
        ) from None
    except yaml.YAMLError as exc:
        raise ComposeError(Problem(FILE_PATH, f"YAML error: {exc}")) from None
    except RecursionError:
        raise ComposeError(Problem(FILE_PATH, "nested too deeply")) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise ComposeError(Problem(FILE_PATH, "the spec is empty"))
    return node


def _reader_line(text: str, position: int) -> int:
    """The line of a reader error: libyaml counts UTF-8 bytes, PyYAML characters."""
    if _LOADER is yaml.SafeLoader:
        return text[:position].count("\n") + 1
    return text.encode()[:position].count(b"\n") + 1


def _check_unicode(text: str) -> None:
    """Lone surrogates (possible in a Python str, never in UTF-8) are refused up front."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text[: exc.start].count("\n") + 1
        raise ComposeError(
            Problem(FILE_PATH, "not valid Unicode (a lone surrogate)", line)
        ) from None


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or "invalid YAML"
    if exc.context:
        what = f"{exc.context}: {what}"
    if mark is None:
        return Problem(FILE_PATH, f"YAML syntax error: {what}")
    return Problem(
        FILE_PATH,
        f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}",
        mark.line + 1,
    )
