"""Request limits applied before any route parses a body: size, JSON nesting depth, string length.

An ASGI middleware (``BodyLimits``) reads the body once, up to ``max_body_bytes`` (``Content-Length``
is checked first, a chunked body is counted as it arrives), rejects JSON nested deeper than
:data:`MAX_DEPTH` or holding a string longer than :data:`MAX_STRING` with a 4xx and a clear
message, and hands the body on unchanged. Without it a body nested 10,000 deep reaches the JSON
parser of a route and escapes as a ``RecursionError`` (500).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

MAX_DEPTH = 16
MAX_STRING = 10_000

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class TooLarge(ValueError):
    pass


def check_json(body: bytes) -> str | None:
    """Why a JSON body is refused (None when it is acceptable or not JSON at all: routes report that)."""
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except RecursionError:
        return f"JSON nested too deep (at most {MAX_DEPTH} levels)"
    except ValueError:
        return None
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                return f"JSON nested too deep (at most {MAX_DEPTH} levels)"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(k, str) and len(k) > MAX_STRING:
                    return f"a JSON key is longer than {MAX_STRING} characters"
                stack.append((v, depth + 1))
        elif isinstance(node, str) and len(node) > MAX_STRING:
            return f"a JSON string is longer than {MAX_STRING} characters"
    return None


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """ASGI middleware; the limit comes from ``app.state.max_body_bytes`` (the API sets it from Settings)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], default_max_bytes: int = 1_048_576) -> None:
        self.app = app
        self.default_max_bytes = default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        limit = int(getattr(state, "max_body_bytes", self.default_max_bytes))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reply(send, 413, f"request body over {limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, f"request body over {limit} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        reason = check_json(body)
        if reason is not None:
            await _reply(send, 413 if "longer than" in reason else 400, reason)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
