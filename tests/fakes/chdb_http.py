"""ClickHouse's HTTP interface in front of a real ClickHouse engine (chDB), for the ``http://`` path
of the ClickHouse store: clickhouse-connect (and Ray Data's ``read_clickhouse``, which uses it) talk
to it exactly as to a ClickHouse server. No ClickHouse server runs on these machines (Debian's is
18.16); the engine behind this endpoint is the same chDB the embedded default uses.

What it speaks: ``POST /`` (or ``GET``) with the statement in the body or in the ``query``
parameter (then the body is the data of an ``INSERT … FORMAT <fmt>``), ``database`` and other
settings as URL parameters, HTTP basic auth (any user), results in the statement's ``FORMAT`` (else
TabSeparated), ``X-ClickHouse-*`` response headers, and errors as HTTP 500 with
``X-ClickHouse-Exception-Code`` and ClickHouse's "Code: N. DB::Exception: …" text.

``python -m tests.fakes.chdb_http --path DIR`` prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
# URL parameters that are not ClickHouse settings.
_NOT_SETTINGS = {"query", "database", "query_id", "session_id", "session_timeout", "session_check", "user", "password", "default_format",
                 "compress", "decompress", "param_"}  # fmt: skip


class Engine:
    """One chDB session (one process may hold one), queries one at a time."""

    #: HTTP-interface settings a server applies to the response, not to the query.
    HTTP_ONLY = {"wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
                 "http_zlib_compression_level", "buffer_size", "cancel_http_readonly_queries_on_client_close"}  # fmt: skip

    def __init__(self, path: str) -> None:
        from chdb import session

        self.session = session.Session(path)
        self.lock = threading.Lock()
        rows = self._query("SELECT name, value FROM system.settings", "TabSeparated").decode().splitlines()
        self.defaults = dict(line.split("\t", 1) for line in rows if "\t" in line)

    def _query(self, sql: str, fmt: str) -> bytes:
        res = self.session.query(sql, fmt)
        return bytes(res.bytes()) if hasattr(res, "bytes") else bytes(res)

    def run(self, sql: str, fmt: str, database: str | None, settings: dict[str, str]) -> bytes:
        """``sql`` in ``database`` with the query's settings (set for it, restored after)."""
        chosen = {k: v for k, v in settings.items() if k in self.defaults and k not in self.HTTP_ONLY}
        with self.lock:
            self._query(f"USE {database or 'default'}", "TabSeparated")
            for k, v in chosen.items():
                self._query(f"SET {k} = '{v}'", "TabSeparated")
            try:
                return self._query(sql, fmt)
            finally:
                for k in chosen:
                    self._query(f"SET {k} = '{self.defaults[k]}'", "TabSeparated")


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if parts.path in ("/ping", "/"):
                if parts.path == "/ping" or (not body and "query" not in params):
                    self._reply(200, b"Ok.\n", {"Content-Type": "text/plain"})
                    return
            query_id = params.get("query_id", "")
            database = params.get("database")
            settings = {k: v for k, v in params.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
            headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Server-Display-Name": "chdb-http",
                       "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": '{"read_rows":"0","written_rows":"0"}'}  # fmt: skip
            try:
                if "query" in params:
                    sql, data = params["query"], body
                else:
                    sql, data = body.decode(), b""
                insert = _INSERT.match(sql)
                if insert and data:
                    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                        f.write(data)
                    try:
                        target, fmt = insert.group(1), insert.group(2)
                        engine.run(f"INSERT INTO {target} SELECT * FROM file('{f.name}', '{fmt}')", "TabSeparated", database, {})
                    finally:
                        os.unlink(f.name)
                    out, fmt = b"", "TabSeparated"
                else:
                    m = _FORMAT.search(sql)
                    fmt = m.group(1) if m else params.get("default_format", "TabSeparated")
                    out = engine.run(_FORMAT.sub("", sql) if m else sql, fmt, database, settings)
                headers["X-ClickHouse-Format"] = fmt
                headers["Content-Type"] = "application/octet-stream" if fmt.lower() in ("native", "arrow", "arrowstream", "parquet") else "text/plain; charset=UTF-8"
                self._reply(200, out, headers)
            except Exception as exc:  # noqa: BLE001 - ClickHouse's own error reply
                text = str(exc).strip()
                code = re.search(r"Code: (\d+)", text)
                headers["X-ClickHouse-Exception-Code"] = code.group(1) if code else "1"
                msg = text if text.startswith("Code:") else f"Code: {headers['X-ClickHouse-Exception-Code']}. DB::Exception: {text}"
                self._reply(500, msg.encode(), headers)

        do_GET = _handle
        do_POST = _handle

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", required=True, help="chDB data directory")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Engine(args.path)))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
