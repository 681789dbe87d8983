"""Engram's two error shapes: its JSON envelope, and the framework's plain text.

Engram (axum) answers its own errors with a JSON envelope, while rejections by
the framework's extractors (content type, malformed JSON, missing field, bad
query string) are plain text. A client must cope with both, so we mimic both.
"""

from __future__ import annotations

from aiohttp import web

DOCS_URL = "https://docs.engram.dev/api/errors"

_GUIDANCE = {
    "INVALID_MEMORY_INPUT": "Check the memory fields: non-empty content, a 768-float embedding.",
    "BAD_REQUEST": "Check the request syntax against the API reference.",
    "UNAUTHORIZED": "Send Authorization: Bearer <api key>.",
    "FORBIDDEN": "This key may not access that memory space.",
    "MEMORY_NOT_FOUND": "The memory may never have been stored, or was de-duplicated/evicted.",
    "RESOURCE_NOT_FOUND": "Create the memory space first with POST /api/v1/spaces.",
    "CONSOLIDATION_NOT_FOUND": "No consolidation snapshot exists for that space yet.",
    "QUERY_TIMEOUT": "Simplify the query or retry later.",
    "MEMORY_VALIDATION_ERROR": "Check the value ranges of the request fields.",
    "MEMORY_SYSTEM_ERROR": "An internal memory system error occurred; retry later.",
    "NOT_IMPLEMENTED": "This operation is not available in this server.",
    "MEMORY_CLUSTER_UNAVAILABLE": "The memory system is temporarily unavailable; retry later.",
    "COMPACTION_IN_PROGRESS": "Retry after the compaction finishes.",
}

STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    408: "QUERY_TIMEOUT",
    409: "COMPACTION_IN_PROGRESS",
    422: "MEMORY_VALIDATION_ERROR",
    500: "MEMORY_SYSTEM_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "MEMORY_CLUSTER_UNAVAILABLE",
}


def engram_error(status: int, code: str, message: str) -> web.Response:
    """Engram's own error: the JSON envelope with educational fields."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "educational_context": f"{code}: {message}",
            "cognitive_guidance": _GUIDANCE.get(code, "See the API documentation."),
        },
        "documentation": {"url": DOCS_URL, "error_code": code},
    }
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


def injected_error(status: int) -> web.Response:
    """An error produced by the error knob, with the code Engram uses for that status."""
    code = STATUS_CODES.get(status, "MEMORY_SYSTEM_ERROR")
    return engram_error(status, code, f"injected fault (status {status})")


def plain_rejection(status: int, text: str) -> web.Response:
    """A framework rejection: plain text, as axum's extractors answer."""
    return web.Response(status=status, text=text, content_type="text/plain")


class Rejection(Exception):
    """Raised by request parsing; carries the response to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response
