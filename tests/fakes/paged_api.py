"""A local paged REST API serving the project's generated transactions, for ``ingest_api`` tests.

``GET /transactions`` pages through the rows (ordered by ``updated_at``, ``transaction_id``) of one
tenant (``tenant=``; a row's tenant follows its account), filtered by ``updated_since=`` (rows
updated at or after it). Pagination per ``--pagination``: ``cursor`` (``cursor=`` / body
``next_cursor``), ``page`` (``page=`` from 1) or ``next_link`` (body ``next``). It enforces what
such APIs enforce: ``limit`` ≤ ``--max-page-size`` (400 otherwise), a bearer token (401), a cursor
it issued (400). ``POST /_fake/inject`` queues faults for the next requests:
``{"status": 429|500|503, "times": n, "retry_after": s}``, ``{"slow": seconds, "times": n}``,
``{"truncated": true}`` (a body cut short), ``{"repeat": true}`` (the previous response again);
``POST /_fake/slow_all`` ``{"seconds": s}`` slows every page; ``GET /_fake/stats`` counts requests.

Run: ``python -m tests.fakes.paged_api --rows 3000 --tenants t1,t2 --pagination cursor --token tok``;
prints ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def generated_rows(rows: int, seed: int) -> list[dict[str, Any]]:
    """The generator's rows as an application's API would return them (strings, ISO times)."""
    from rayapp.tools.datagen import GenSpec, generate_table

    spec = GenSpec(rows=rows, seed=seed, files=1)
    out = []
    for r in generate_table(spec, 0).to_pylist():
        out.append({k: (v.isoformat().replace("+00:00", "Z") if hasattr(v, "isoformat") else (None if v is None else str(v))) for k, v in r.items()})
    return sorted(out, key=lambda r: (r["updated_at"] or "", r["transaction_id"] or ""))


def tenant_of(account_id: str, tenants: list[str]) -> str:
    return tenants[int(hashlib.md5(account_id.encode()).hexdigest(), 16) % len(tenants)]


class Api:
    def __init__(self, rows: list[dict[str, Any]], tenants: list[str], pagination: str, max_page_size: int, token: str | None) -> None:
        self.rows = rows
        self.tenants = tenants
        self.pagination = pagination
        self.max_page_size = max_page_size
        self.token = token
        self.faults: list[dict[str, Any]] = []
        self.slow_all = 0.0
        self.last: tuple[int, bytes] | None = None
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "pages_served": 0, "faults_served": 0}

    def select(self, tenant: str | None, since: str | None) -> list[dict[str, Any]]:
        rows = self.rows
        if tenant:
            rows = [r for r in rows if tenant_of(r["account_id"], self.tenants) == tenant]
        if since:
            rows = [r for r in rows if (r["updated_at"] or "") >= since]
        return rows

    def page(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= self.max_page_size:
            return 400, {"error": f"limit must be between 1 and {self.max_page_size}"}
        tenant = query.get("tenant")
        if tenant is not None and tenant not in self.tenants:
            return 404, {"error": f"no tenant {tenant}"}
        rows = self.select(tenant, query.get("updated_since"))
        if self.pagination == "page":
            start = (int(query.get("page", "1")) - 1) * limit
        elif "cursor" in query or "offset" in query:
            raw = query.get("cursor") or query.get("offset") or ""
            try:
                start = int(base64.urlsafe_b64decode(raw.encode()).decode().split(":")[1]) if "cursor" in query else int(raw)
            except (ValueError, IndexError):
                return 400, {"error": "invalid cursor"}
        else:
            start = 0
        chunk = rows[start : start + limit]
        end = start + len(chunk)
        body: dict[str, Any] = {"data": chunk}
        more = end < len(rows)
        if self.pagination == "cursor":
            body["next_cursor"] = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if more else None
        elif self.pagination == "next_link":
            rest = {k: v for k, v in query.items() if k not in ("offset",)}
            body["next"] = ("/transactions?" + "&".join(f"{k}={v}" for k, v in {**rest, "offset": end}.items())) if more else None
        return 200, body


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            path = urlsplit(self.path).path
            with api.lock:
                if path == "/_fake/inject":
                    api.faults += [dict(body, times=1)] * int(body.get("times", 1))
                elif path == "/_fake/slow_all":
                    api.slow_all = float(body.get("seconds", 0))
                else:
                    self._send(404, b'{"error": "no route"}')
                    return
            self._send(200, b"{}")

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/_fake/stats":
                with api.lock:
                    self._send(200, json.dumps(api.stats).encode())
                return
            if parts.path != "/transactions":
                self._send(404, b'{"error": "no route"}')
                return
            with api.lock:
                api.stats["requests"] += 1
                fault = api.faults.pop(0) if api.faults else None
                slow = api.slow_all
            if api.token and self.headers.get("Authorization") != f"Bearer {api.token}":
                self._send(401, b'{"error": "invalid or missing token"}')
                return
            if fault and "slow" in fault:
                time.sleep(float(fault["slow"]))
            elif fault and "status" in fault:
                api.stats["faults_served"] += 1
                extra = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                self._send(int(fault["status"]), json.dumps({"error": "injected"}).encode(), extra)
                return
            if slow:
                time.sleep(slow)
            if fault and fault.get("repeat") and api.last is not None:
                api.stats["faults_served"] += 1
                self._send(*api.last)
                return
            status, body = api.page({k: v[-1] for k, v in parse_qs(parts.query).items()})
            data = json.dumps(body).encode()
            if status == 200:
                with api.lock:
                    api.last = (status, data)
                    api.stats["pages_served"] += 1
            if fault and fault.get("truncated"):
                api.stats["faults_served"] += 1
                data = data[: len(data) // 2]
            self._send(status, data)

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--tenants", default="t1,t2")
    p.add_argument("--pagination", choices=("cursor", "page", "next_link"), default="cursor")
    p.add_argument("--max-page-size", type=int, default=200)
    p.add_argument("--token")
    args = p.parse_args()
    api = Api(generated_rows(args.rows, args.seed), args.tenants.split(","), args.pagination, args.max_page_size, args.token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
