"""Signed URLs for the files of a local lake, served by the API at ``/v1/blobs/…``.

A URL names one file and an expiry, and carries ``HMAC-SHA256(key, "<path>\\n<expires>")``;
anyone holding it may download that file until it expires, nothing else. The key is
``RAYAPP_API_SIGNING_KEY`` or, when unset, 32 random bytes created once in ``<lake>/_system``
(readable by the lake's owner only), so every API replica on the lake signs alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from rayapp.settings import Settings


class BadSignature(Exception):
    """The URL was altered or has expired."""


def signing_key(settings: Settings) -> bytes:
    """The HMAC key for local file URLs (created on first use when not configured)."""
    if settings.api_signing_key is not None:
        return settings.api_signing_key.get_secret_value().encode()
    folder = Path(settings.lake_root) / "_system"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "signing.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:  # this process made the file: write the key (readers below wait for it to be complete)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)))
    for _ in range(50):
        raw = path.read_bytes().strip()
        if len(raw) == 44:
            return raw
        time.sleep(0.01)
    raise RuntimeError(f"signing key {path} is damaged: delete it (outstanding URLs stop working) or set RAYAPP_API_SIGNING_KEY")


def _mac(key: bytes, path: str, expires: int) -> str:
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, path: str, ttl_s: int, now: float | None = None) -> tuple[int, str]:
    """``(expires, signature)`` for ``path`` (a dataset name and a file path inside its table)."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    return expires, _mac(key, path, expires)


def check(key: bytes, path: str, expires: int, signature: str, now: float | None = None) -> None:
    """Raises:
    BadSignature: ``signature`` is not this path's and expiry's, or the expiry has passed.
    """
    if not hmac.compare_digest(_mac(key, path, expires), signature):
        raise BadSignature("the URL's signature does not match: it was altered or signed by another key")
    if (now if now is not None else time.time()) > expires:
        raise BadSignature("the URL has expired: ask /v1/datasets/{name}/files for a new one")
