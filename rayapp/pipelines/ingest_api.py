"""``ingest_api``: REST API sources → JSON Lines landing files that ``ingest`` takes like any other.

Each page becomes ``<landing>/api/<source>/<tenant>/<traversal>/page-<n>.jsonl`` (every row with
``_tenant``, which bronze keeps in ``_extra``); ``ingest`` sets ``_source_system`` to the source's
name for files under ``api/<source>/``. The tenant's position moves in the ledger
(``_ledger/api_cursors``) only after the page's file is durably in place, so a run killed
mid-pagination fetches at most one page again — to the same file name with the same content,
which ``ingest`` (keyed by path and checksum) does not take twice. Tenants page in parallel as Ray tasks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import API_CURSORS_SCHEMA, LEDGER_API_CURSORS
from rayapp.errors import ConfigError, RayappError
from rayapp.lake import Lake
from rayapp.settings import Settings
from rayapp.ledger import Ledger, StageResult, utcnow
from rayapp.sources.api import MalformedPage, Position, RateLimiter, SourceError, fetch_page
from rayapp.urls import is_remote, join_uri

logger = logging.getLogger(__name__)

NO_TENANT = "default"


@dataclass(kw_only=True)
class IngestApiResult(StageResult):
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)


def positions(lake: Lake, source: str) -> dict[str, Position]:
    """The newest position of every tenant of ``source``."""
    table = lake.read(LEDGER_API_CURSORS)
    if table.num_rows == 0:
        return {}
    table = table.filter(pc.equal(table["source"], source)).sort_by([("recorded_at", "ascending")])
    return {t: Position.from_json(p) for t, p in zip(table["tenant"].to_pylist(), table["position"].to_pylist())}


def _record(lake: Lake, source: str, tenant: str, pos: Position, file: str | None, checksum: str | None, rows: int, run_id: str) -> None:
    row = {"source": source, "tenant": tenant, "position": pos.to_json(), "file": file, "checksum": checksum, "rows": rows, "run_id": run_id,
           "recorded_at": utcnow()}  # fmt: skip
    lake.append(LEDGER_API_CURSORS, pa.Table.from_pylist([row], schema=API_CURSORS_SCHEMA))


def page_uri(landing: str, source: str, tenant: str, pos: Position) -> str:
    """Where a page goes: the same name whenever the same traversal reaches the same page."""
    traversal = "full" if not pos.since else "since-" + hashlib.sha256(pos.since.encode()).hexdigest()[:12]
    return join_uri(landing, "api", source, tenant, traversal, f"page-{pos.seq + 1:06d}.jsonl")


def _write_durably(lake: Lake, uri: str, data: bytes) -> None:
    """The whole file or nothing at ``uri``: a local file is written aside, synced and renamed; an S3 PUT is atomic."""
    fs, path = lake.fsspec(uri)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp")  # a dot name: ingest ignores it
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fetch_tenant(lake: Lake, source_name: str, tenant: str, run_id: str, since: str | None = None, max_pages: int | None = None) -> dict[str, Any]:
    """Page through one tenant from where it stands (or a fresh traversal from ``since``).

    Returns:
        pages, rows and files written, and where the tenant stands now; ``error`` when the API
        refused, kept failing, or served a page that could not be read (nothing after it is written).
    """
    import httpx

    source = lake.settings.sources[source_name]
    pos = positions(lake, source_name).get(tenant, Position())
    if since is not None:
        pos = Position(since=since)
    elif pos.done:
        pos = pos.next_traversal()
    limiter = RateLimiter(source.requests_per_second)
    out: dict[str, Any] = {"pages": 0, "rows": 0, "files": 0, "repeated_pages": 0, "since": pos.since, "error": None}
    repeats = 0
    try:
        with httpx.Client(follow_redirects=True) as client:
            while max_pages is None or out["pages"] < max_pages:
                page = fetch_page(client, source, None if tenant == NO_TENANT else tenant, pos, limiter)
                if page.repeated:  # the rows of the page before, again: not written, the same page asked again
                    out["repeated_pages"] += 1
                    repeats += 1
                    logger.warning("%s: the same rows as the page before; not written again", page.request)
                    if repeats > source.max_retries:
                        raise MalformedPage(f"{page.request}: the API served the page before {repeats} times in a row")
                    continue
                repeats = 0
                out["pages"] += 1
                file = checksum = None
                if page.rows:
                    file = page_uri(lake.settings.landing, source_name, tenant, pos)
                    data = "".join(json.dumps({**r, "_tenant": tenant}, separators=(",", ":")) + "\n" for r in page.rows).encode()
                    checksum = hashlib.sha256(data).hexdigest()
                    _write_durably(lake, file, data)
                    out["rows"] += len(page.rows)
                    out["files"] += 1
                pos = page.after
                _record(lake, source_name, tenant, pos, file, checksum, len(page.rows), run_id)  # only now does the cursor move
                if pos.done:
                    break
    except (SourceError, MalformedPage) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        logger.error("source %s tenant %s stopped: %s", source_name, tenant, exc)
    out["position"] = pos.__dict__
    return out


def chosen_sources(settings: Settings, sources: list[str] | None) -> list[str]:
    """The sources a run fetches (default: every configured one; none configured is nothing to do).

    Raises:
        ConfigError: an unknown name.
    """
    names = sources or list(settings.sources)
    for name in names:
        if name not in settings.sources:
            raise ConfigError(f"unknown API source {name!r} (sources: {', '.join(settings.sources) or 'none configured'})")
    return names


def ingest_api(lake: Lake, ledger: Ledger, run_id: str, sources: list[str] | None = None, tenants: list[str] | None = None,
               since: str | None = None, max_pages: int | None = None) -> IngestApiResult:  # fmt: skip
    """Fetch new pages of each source (default: every configured one) for each tenant, the tenants
    of all sources in parallel as Ray tasks, into the landing zone.

    Raises:
        ConfigError: no such source.
        RayappError: a tenant stopped (the API refused, kept failing, or served a page that could
            not be read); the other tenants' pages are in, and every tenant continues where it stands.
    """
    import ray

    configured = lake.settings.sources
    names = chosen_sources(lake.settings, sources)
    result = IngestApiResult()
    result.details = {"sources": names, "tenants": result.tenants}
    if not names:
        logger.info("no API sources configured: nothing to fetch (declare [sources.NAME] in the settings TOML)")
        return result
    lake.check_reachable()
    lake.ensure(LEDGER_API_CURSORS)
    task = ray.remote(num_cpus=0.1, max_retries=0)(fetch_tenant)
    refs = {(name, t): task.remote(lake, name, t, run_id, since, max_pages)
            for name in names for t in (tenants or configured[name].tenants or [NO_TENANT])}  # fmt: skip
    for (name, tenant), ref in refs.items():
        got = ray.get(ref)
        result.tenants[f"{name}/{tenant}"] = got
        for k in ("pages", "rows", "files", "repeated_pages"):
            result.counts[k] = result.counts.get(k, 0) + got[k]
    failed = {t: r["error"] for t, r in result.tenants.items() if r["error"]}
    if failed:
        raise RayappError("; ".join(f"{t}: {e}" for t, e in failed.items()))
    return result
