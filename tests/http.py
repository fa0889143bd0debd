"""A small HTTP client for tests that talk to the Serve app over real HTTP (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(method: str, url: str, key: str | None = None, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """``(status, headers, body bytes)``; error statuses are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body, default=str).encode() if body is not None else None)
    h = {"content-type": "application/json"} if data is not None else {}
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, key: str | None = None) -> tuple[int, Any]:
    status, _, body = call("GET", url, key)
    return status, json.loads(body or b"null")


def post_json(url: str, body: Any, key: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    status, _, data = call("POST", url, key, body, raw)
    return status, json.loads(data or b"null")
