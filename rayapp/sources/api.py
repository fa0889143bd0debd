"""Paging through one tenant of a REST API source: requests, retries, and the shape of a page.

A :class:`Position` says where the next request starts (cursor, page number or next link, and the
``since`` of the incremental filter); :func:`fetch_page` makes that request — rate-limited,
retrying 429 and 5xx with backoff that honours ``Retry-After`` — and returns the page's rows and
the position after it. A page whose body is not the declared shape is refused whole
(:class:`MalformedPage`); a 4xx other than 429 fails with the API's own message (:class:`SourceError`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Callable
from urllib.parse import urljoin

from rayapp.errors import RayappError
from rayapp.settings import ApiSource, Pagination

logger = logging.getLogger(__name__)

RETRYABLE = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 120.0


class SourceError(RayappError):
    """The API refused the request (a 4xx other than 429), or kept failing past the retries."""


class MalformedPage(RayappError):
    """A page that cannot be read as declared; nothing of it is written and the cursor stays."""


@dataclass(frozen=True)
class Position:
    """Where a tenant's pagination stands (what the ledger keeps between pages and runs)."""

    since: str | None = None  # the incremental filter of this traversal
    cursor: str | None = None  # cursor pagination: the next request's cursor (None: the first page)
    page: int = 1  # page pagination: the next page number
    link: str | None = None  # next_link pagination: the next page's URL (None: the first page)
    seq: int = 0  # pages written in this traversal (names the files)
    high: str | None = None  # the highest since_field value seen in this traversal
    done: bool = False  # the traversal reached its last page
    last_hash: str | None = None  # content hash of the last page's rows (a repeated page is not written twice)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Position":
        return cls(**json.loads(text))

    def next_traversal(self) -> "Position":
        """After a complete traversal: start again from the first page, filtered from the highest value seen."""
        return Position(since=self.high or self.since)


def dig(body: Any, path: str) -> Any:
    """``body["a"]["b"]`` for ``"a.b"`` (None when absent)."""
    for part in path.split(".") if path else []:
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    after: Position
    request: str  # what was asked (method and URL without secrets), for messages
    repeated: bool = False  # the same rows as the page before: the API served it twice; the position stays


class RateLimiter:
    """At most ``per_second`` calls per second (one caller)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second
        self.clock = clock
        self.sleep = sleep
        self.last = float("-inf")

    def wait(self) -> None:
        gap = self.last + self.interval - self.clock()
        if gap > 0:
            self.sleep(gap)
        self.last = self.clock()


def _request(source: ApiSource, tenant: str | None, pos: Position) -> tuple[str, dict[str, Any]]:
    if source.pagination is Pagination.NEXT_LINK and pos.link:
        return pos.link, {}
    url = source.url.replace("{tenant}", tenant or "")
    params: dict[str, Any] = {}
    if tenant and "{tenant}" not in source.url and source.tenant_param:
        params[source.tenant_param] = tenant
    if source.page_size_param:
        params[source.page_size_param] = source.page_size
    if source.since_param and pos.since:
        params[source.since_param] = pos.since
    if source.pagination is Pagination.CURSOR and pos.cursor:
        params[source.cursor_param] = pos.cursor
    elif source.pagination is Pagination.PAGE:
        params[source.page_param] = pos.page
    return url, params


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
        except (TypeError, ValueError):
            return None


def fetch_page(client: Any, source: ApiSource, tenant: str | None, pos: Position, limiter: RateLimiter,
               sleep: Callable[[float], None] = time.sleep) -> Page:  # fmt: skip
    """One page after ``pos``.

    Raises:
        SourceError: a 4xx other than 429 (with the API's message), or retries exhausted.
        MalformedPage: the body is not JSON, or its rows / next position are not where declared.
    """
    import httpx

    url, params = _request(source, tenant, pos)
    what = f"GET {url}" + (f" {params}" if params else "")
    headers = {source.auth_header: source.auth_value.get_secret_value()} if source.auth_value is not None else {}
    for attempt in range(source.max_retries + 1):
        limiter.wait()
        try:
            resp = client.get(url, params=params or None, headers=headers, timeout=source.timeout_s)  # {} would drop a link's query
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            problem, delay = f"{type(exc).__name__}: {exc}", None
        else:
            if resp.status_code == 200:
                return _page(source, pos, resp.content, what)
            if resp.status_code not in RETRYABLE:
                raise SourceError(f"{what} answered {resp.status_code}: {_message(resp)}")
            problem, delay = f"HTTP {resp.status_code}", _retry_after(resp.headers.get("retry-after"))
        if attempt == source.max_retries:
            raise SourceError(f"{what} still failing after {source.max_retries + 1} attempts ({problem})")
        backoff = delay if delay is not None else random.uniform(0, min(30.0, 0.5 * 2**attempt))
        logger.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", what, problem, backoff, attempt + 1, source.max_retries + 1)
        sleep(backoff)
    raise AssertionError("unreachable")


def _message(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    for key in ("error", "message", "detail"):
        if isinstance(body, dict) and body.get(key):
            value = body[key]
            return (value if isinstance(value, str) else json.dumps(value))[:300]
    return json.dumps(body)[:300]


def _page(source: ApiSource, pos: Position, content: bytes, what: str) -> Page:
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise MalformedPage(f"{what}: the body is not JSON ({exc}; {len(content)} bytes)") from None
    rows = dig(body, source.items)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MalformedPage(f"{what}: no list of objects at {source.items!r} in the body")
    import hashlib

    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:32] if rows else None
    if digest is not None and digest == pos.last_hash:  # served again: nothing to write, ask for the same page again
        return Page(rows, pos, what, repeated=True)
    high = pos.high
    for r in rows:
        v = r.get(source.since_field)
        if isinstance(v, str) and (high is None or v > high):
            high = v
    after = replace(pos, seq=pos.seq + 1, high=high, last_hash=digest)
    if source.pagination is Pagination.CURSOR:
        nxt = dig(body, source.next_cursor)
        if nxt is not None and not isinstance(nxt, (str, int)):
            raise MalformedPage(f"{what}: {source.next_cursor!r} is not a cursor")
        if nxt is not None and str(nxt) == pos.cursor:
            raise MalformedPage(f"{what}: the API returned the same cursor again (a repeated page)")
        after = replace(after, cursor=None if nxt in (None, "") else str(nxt), done=nxt in (None, ""))
    elif source.pagination is Pagination.PAGE:
        after = replace(after, page=pos.page + 1, done=len(rows) < source.page_size)
    else:
        link = dig(body, source.next_link)
        if link is not None and not isinstance(link, str):
            raise MalformedPage(f"{what}: {source.next_link!r} is not a URL")
        if link and pos.link and urljoin(source.url, link) == pos.link:
            raise MalformedPage(f"{what}: the API linked to the same page again")
        after = replace(after, link=urljoin(source.url, link) if link else None, done=not link)
    return Page(rows, after, what)
