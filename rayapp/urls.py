"""URL helpers: a leaf module (imports nothing from rayapp), used by settings, the lake and the sinks."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["is_remote", "join_uri", "redact_url", "strip_file_scheme", "url_path", "url_query", "scheme_of"]


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names object storage (``s3://`` / ``s3a://``) rather than a local path."""
    return urlsplit(uri).scheme in ("s3", "s3a")


def strip_file_scheme(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join_uri(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with single slashes (local paths and ``s3://`` alike)."""
    base = base.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts if p)])


def redact_url(url: str) -> str:
    """Mask the password (and API-key style query values) of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "**********"
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:***@{host}"
    query = re.sub(r"(?i)((?:password|secret|api[_-]?key|token)=)[^&]*", r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_path(url: str) -> str:
    """The filesystem path of an embedded-engine URL (``chdb:///abs/path`` -> ``/abs/path``).

    Raises:
        ValueError: the URL names no path.
    """
    parts = urlsplit(url)
    path = (parts.netloc + parts.path) if parts.netloc not in ("", "localhost") else parts.path
    if not path:
        raise ValueError(f"{redact_url(url)}: the URL names no path")
    return path


def url_query(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
