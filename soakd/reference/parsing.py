"""Request parsing with Engram's rejection rules.

axum's ``Json`` extractor answers 415 (content type), 400 (malformed JSON) and
422 (missing or mistyped field) in plain text; its ``Query`` extractor answers 400
in plain text. Engram's own validation (empty content, 768 floats, space ids)
answers its JSON envelope. Space selection: header ``X-Memory-Space``, then
``?space=``, then body ``memory_space_id``, then ``default`` (the query endpoint
puts the body first).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import numpy as np
from aiohttp import web

from soakd.reference.envelope import Rejection, engram_error, plain_rejection
from soakd.reference.vectors import DIM, F32

DEFAULT_SPACE = "default"
SPACE_HEADER = "X-Memory-Space"
_SPACE_RE = re.compile(r"^[a-z0-9_-]{3,64}$")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body, or a plain-text framework rejection."""
    if request.content_type != "application/json":
        raise Rejection(
            plain_rejection(415, "Expected request with `Content-Type: application/json`")
        )
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejection(
            plain_rejection(400, f"Failed to parse the request body as JSON: {exc}")
        ) from None
    if not isinstance(body, dict):
        raise Rejection(_type_error("invalid type: expected a JSON object"))
    return body


def _type_error(detail: str) -> web.Response:
    return plain_rejection(
        422, f"Failed to deserialize the JSON body into the target type: {detail}"
    )


def field_str(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    """A string field (422 if missing when required, or of another type)."""
    value = body.get(name)
    if value is None:
        if required:
            raise Rejection(_type_error(f"missing field `{name}`"))
        return None
    if not isinstance(value, str):
        raise Rejection(_type_error(f"{name}: invalid type, expected a string"))
    return value


def field_float(body: dict[str, Any], name: str) -> float | None:
    """An optional number field (422 if of another type)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejection(_type_error(f"{name}: invalid type, expected f32"))
    return float(value)


def as_numbers(value: Any) -> F32 | None:
    """A JSON list of numbers as float32, or None if it is anything else.

    numpy does the type check in C: a per-element isinstance loop cost more than
    the rest of a store. (A list mixing booleans with numbers slips through as
    0/1, where serde would refuse it; no client sends that.)
    """
    if not isinstance(value, list):
        return None
    try:
        arr = np.array(value)
    except ValueError:  # ragged nesting
        return None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "fi"):
        return None
    return arr.astype(np.float32)


def field_embedding(body: dict[str, Any]) -> F32 | None:
    """The optional embedding: 422 if not a float array, 400 if not 768 long."""
    value = body.get("embedding")
    if value is None:
        return None
    arr = as_numbers(value)
    if arr is None:
        raise Rejection(_type_error("embedding: invalid type, expected a sequence of f32"))
    return check_embedding(arr)


def check_embedding(values: F32) -> F32:
    """Engram's own check: exactly 768 finite floats."""
    if values.size != DIM:
        raise Rejection(
            engram_error(
                400,
                "INVALID_MEMORY_INPUT",
                f"Embedding must be exactly {DIM} dimensions, got {values.size}",
            )
        )
    if not bool(np.isfinite(values).all()):
        raise Rejection(
            engram_error(400, "INVALID_MEMORY_INPUT", "Embedding has non-finite values")
        )
    return values


def field_timestamp(body: dict[str, Any], name: str) -> float | None:
    """An optional RFC 3339 timestamp as epoch seconds (422 if unparsable)."""
    text = field_str(body, name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise Rejection(_type_error(f"{name}: input contains invalid characters")) from None


def check_space_id(space_id: str) -> str:
    """Engram's space id rule: 3-64 chars of [a-z0-9_-]."""
    if not _SPACE_RE.match(space_id):
        raise Rejection(
            engram_error(
                400,
                "BAD_REQUEST",
                f"Invalid memory space id {space_id!r}: use 3-64 characters of [a-z0-9_-]",
            )
        )
    return space_id


def select_space(
    request: web.Request, body: dict[str, Any] | None = None, body_first: bool = False
) -> str:
    """The space of a request, by Engram's precedence rules."""
    header = request.headers.get(SPACE_HEADER)
    query = request.query.get("space")
    from_body = field_str(body, "memory_space_id") if body is not None else None
    order = (from_body, header, query) if body_first else (header, query, from_body)
    for candidate in order:
        if candidate:
            return check_space_id(candidate)
    return DEFAULT_SPACE


def query_int(request: web.Request, name: str, default: int) -> int:
    """An optional integer query parameter (plain-text 400 if malformed, as axum's Query)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Rejection(
            plain_rejection(400, f"Failed to deserialize query string: {name}: invalid digit")
        ) from None
    if value < 0:
        raise Rejection(
            plain_rejection(400, f"Failed to deserialize query string: {name}: invalid digit")
        )
    return value


def query_float(request: web.Request, name: str, default: float) -> float:
    """An optional float query parameter (plain-text 400 if malformed)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise Rejection(
            plain_rejection(400, f"Failed to deserialize query string: {name}: invalid float")
        ) from None


def query_bool(request: web.Request, name: str) -> bool:
    """An optional boolean query parameter (plain-text 400 if malformed)."""
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise Rejection(
            plain_rejection(400, f"Failed to deserialize query string: {name}: invalid bool")
        )
    return raw == "true"
