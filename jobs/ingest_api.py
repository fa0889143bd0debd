"""Job `ingest_api`: page through a REST API source into the landing zone (then `ingest` takes it)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult
from rayapp.settings import Settings


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=[], help="a source declared as [sources.NAME] in the settings TOML (repeatable; default: all)")
    p.add_argument("--tenant", action="append", default=[], help="only this tenant (repeatable; default: the source's tenants)")
    p.add_argument("--since", help="start a fresh traversal filtered from this value (the source's since_param)")
    p.add_argument("--max-pages", type=int, help="stop each tenant after this many pages (it continues there next run)")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    if args.max_pages is not None and args.max_pages < 1:
        raise ConfigError("--max-pages must be ≥ 1")


def _check(settings: Settings, args: argparse.Namespace) -> None:
    from rayapp.pipelines.ingest_api import chosen_sources

    chosen_sources(settings, args.source or None)


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.ingest_api import ingest_api

    res = ingest_api(ctx.lake, ctx.ledger, ctx.run_id, args.source or None, args.tenant or None, since=args.since, max_pages=args.max_pages)
    if not res.details["sources"]:
        return JobResult.of(res, "no API sources configured: nothing to fetch (declare [sources.NAME] in the settings TOML)")
    lines = [f"sources {', '.join(res.details['sources'])}: {res.counts.get('pages', 0)} page(s), {res.counts.get('rows', 0)} rows in "
             f"{res.counts.get('files', 0)} landing file(s); `rayapp run ingest` takes them"]  # fmt: skip
    for tenant, t in res.tenants.items():
        state = "complete" if t["position"]["done"] else "more pages next run"
        lines.append(f"  tenant {tenant}: {t['pages']} page(s), {t['rows']} rows ({state}; since {t['since'] or '-'})")
    return JobResult.of(res, "\n".join(lines))


DESCRIPTION = "Page through a REST API source (cursor, page or next-link) into JSON Lines landing files"
SPEC = Job("ingest_api", DESCRIPTION, _body, _arguments, validate=_validate, check=_check)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
