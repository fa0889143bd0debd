"""A local stand-in for a Pinecone index's data plane (REST, API version headers ignored).

Speaks the endpoints the ``pinecone`` SDK's ``Index`` uses — ``/vectors/upsert``, ``/query``,
``/vectors/fetch``, ``/vectors/delete``, ``/describe_index_stats`` — with Pinecone's JSON shapes,
and enforces the documented limits so batching bugs fail tests: ≤ 1000 vectors and ≤ 2 MB per
upsert, ≤ 40 KB metadata per vector, no null metadata values, ids ≤ 512 characters, ≤ 1000 ids
per fetch/delete, the index dimension, and the ``Api-Key`` header.

Run: ``python -m tests.fakes.pinecone_server [--port 0] [--down] --dimension 384 --api-key k``; it prints
``PORT <n>`` once it listens.
``GET /_fake/stats`` reports what it received (requests, largest upsert) for assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_LENGTH = 512
MAX_IDS = 1000
MAX_TOP_K = 10_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


_OPS = {
    "$eq": lambda v, a: v == a, "$ne": lambda v, a: v != a,
    "$gt": lambda v, a: _num(v) and v > a, "$gte": lambda v, a: _num(v) and v >= a,
    "$lt": lambda v, a: _num(v) and v < a, "$lte": lambda v, a: _num(v) and v <= a,
    "$in": lambda v, a: v in a, "$nin": lambda v, a: v not in a, "$exists": lambda v, a: (v is not None) == a,
}  # fmt: skip


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_filter(flt: Any) -> None:
    """Pinecone's rules for a metadata filter: objects of fields and operators; ranges on numbers only."""
    if not isinstance(flt, dict):
        raise ApiError(400, "filter must be a JSON object")
    for key, value in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list):
                raise ApiError(400, f"{key} takes an array")
            for sub in value:
                check_filter(sub)
        elif key.startswith("$"):
            raise ApiError(400, f"unknown operator {key}")
        elif isinstance(value, dict):
            for op, arg in value.items():
                if op not in _OPS:
                    raise ApiError(400, f"unknown operator {op}")
                if op in ("$gt", "$gte", "$lt", "$lte") and not _num(arg):
                    raise ApiError(400, f"{op} takes a number")
                if op in ("$in", "$nin") and not isinstance(arg, list):
                    raise ApiError(400, f"{op} takes an array")


def matches(meta: dict[str, Any], flt: dict[str, Any]) -> bool:
    for key, value in flt.items():
        if key == "$and":
            ok = all(matches(meta, sub) for sub in value)
        elif key == "$or":
            ok = any(matches(meta, sub) for sub in value)
        else:
            ops = value if isinstance(value, dict) else {"$eq": value}
            ok = all(_OPS[op](meta.get(key), arg) for op, arg in ops.items())
        if not ok:
            return False
    return True


class Index:
    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.namespaces: dict[str, dict[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "upserts": 0, "max_upsert_vectors": 0, "max_upsert_bytes": 0, "rejected": 0}

    def _check_id(self, vid: Any) -> str:
        if not isinstance(vid, str) or not vid or len(vid) > MAX_ID_LENGTH:
            raise ApiError(400, f"Vector ID must be a non-empty string of at most {MAX_ID_LENGTH} characters")
        return vid

    def upsert(self, body: dict[str, Any], size: int) -> dict[str, Any]:
        vectors = body.get("vectors") or []
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise ApiError(400, f"Batch size exceeds {MAX_UPSERT_VECTORS}. Found {len(vectors)} vectors in this request.")
        for v in vectors:
            self._check_id(v.get("id"))
            values = v.get("values") or []
            if len(values) != self.dimension:
                raise ApiError(400, f"Vector dimension {len(values)} does not match the dimension of the index {self.dimension}")
            if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) for x in values):
                raise ApiError(400, "Vector values must be finite numbers")
            meta = v.get("metadata")
            if meta is not None:
                if len(json.dumps(meta).encode()) > MAX_METADATA_BYTES:
                    raise ApiError(400, f"Metadata size exceeds the limit of {MAX_METADATA_BYTES} bytes per vector")
                for k, val in meta.items():
                    ok = isinstance(val, (str, int, float, bool)) or (isinstance(val, list) and all(isinstance(x, str) for x in val))
                    if not ok:
                        raise ApiError(400, f"Metadata value for field {k!r} must be a string, number, boolean or list of strings")
        ns = body.get("namespace") or "__default__"
        with self.lock:
            store = self.namespaces.setdefault(ns, {})
            for v in vectors:
                store[v["id"]] = {"id": v["id"], "values": list(v["values"]), "metadata": v.get("metadata") or {}}
            self.stats["upserts"] += 1
            self.stats["max_upsert_vectors"] = max(self.stats["max_upsert_vectors"], len(vectors))
            self.stats["max_upsert_bytes"] = max(self.stats["max_upsert_bytes"], size)
        return {"upsertedCount": len(vectors)}

    def fetch(self, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids", [])
        if not ids:
            raise ApiError(400, "ids must be provided")
        if len(ids) > MAX_IDS:
            raise ApiError(400, f"Cannot fetch more than {MAX_IDS} ids per request")
        ns = (query.get("namespace") or [""])[0] or "__default__"
        with self.lock:
            store = self.namespaces.get(ns, {})
            found = {i: store[i] for i in ids if i in store}
        return {"vectors": found, "namespace": "" if ns == "__default__" else ns, "usage": {"readUnits": 1}}

    def list_ids(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """``GET /vectors/list``: ids in id order, ``limit`` (1..100, default 100) per page, a
        ``prefix`` filter, and an opaque ``paginationToken`` to the next page."""
        limit = int((query.get("limit") or ["100"])[0])
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100")
        ns = (query.get("namespace") or [""])[0] or "__default__"
        prefix = (query.get("prefix") or [""])[0]
        after = (query.get("paginationToken") or [""])[0]
        with self.lock:
            ids = sorted(i for i in self.namespaces.get(ns, {}) if i.startswith(prefix) and i > after)
        page = ids[:limit]
        out: dict[str, Any] = {"vectors": [{"id": i} for i in page], "namespace": "" if ns == "__default__" else ns, "usage": {"readUnits": 1}}
        if len(ids) > limit:
            out["pagination"] = {"next": page[-1]}
        return out

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body.get("namespace") or "__default__"
        ids = body.get("ids")
        with self.lock:
            store = self.namespaces.setdefault(ns, {})
            if body.get("deleteAll"):
                store.clear()
            elif ids is not None:
                if len(ids) > MAX_IDS:
                    raise ApiError(400, f"Cannot delete more than {MAX_IDS} ids per request")
                for i in ids:
                    store.pop(i, None)
            else:
                raise ApiError(400, "one of ids, deleteAll or filter is required")
        return {}

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        top_k = int(body.get("topK", 10))
        if not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"topK must be between 1 and {MAX_TOP_K}")
        vector = body.get("vector")
        if vector is None or len(vector) != self.dimension:
            raise ApiError(400, "query vector missing or of the wrong dimension")
        ns = body.get("namespace") or "__default__"
        flt = body.get("filter")
        if flt is not None:
            check_filter(flt)
        with self.lock:
            items = [it for it in self.namespaces.get(ns, {}).values() if flt is None or matches(it.get("metadata") or {}, flt)]

        def cosine(a: list[float], b: list[float]) -> float:
            na = math.sqrt(sum(x * x for x in a)) or 1.0
            nb = math.sqrt(sum(x * x for x in b)) or 1.0
            return sum(x * y for x, y in zip(a, b)) / (na * nb)

        scored = sorted(((cosine(vector, it["values"]), it) for it in items), key=lambda p: -p[0])[:top_k]
        found = []
        for score, it in scored:
            m: dict[str, Any] = {"id": it["id"], "score": score}
            if body.get("includeValues"):
                m["values"] = it["values"]
            if body.get("includeMetadata"):
                m["metadata"] = it["metadata"]
            found.append(m)
        return {"matches": found, "namespace": "" if ns == "__default__" else ns, "usage": {"readUnits": 5}}

    def describe(self) -> dict[str, Any]:
        with self.lock:
            namespaces = {ns: {"vectorCount": len(v)} for ns, v in self.namespaces.items() if v}
        return {
            "namespaces": namespaces,
            "dimension": self.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(n["vectorCount"] for n in namespaces.values()),
        }


def make_handler(index: Index, api_key: str, state: dict[str, bool] | None = None) -> type[BaseHTTPRequestHandler]:
    """``state["up"]`` False makes the data plane answer 503 (an outage) until ``POST /_fake/up``."""
    state = state if state is not None else {"up": True}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                if parts.path == "/_fake/stats":
                    self._send(200, dict(index.stats))
                    return
                if parts.path in ("/_fake/up", "/_fake/down"):
                    state["up"] = parts.path == "/_fake/up"
                    self._send(200, {"up": state["up"]})
                    return
                if not state["up"]:
                    index.stats["unavailable"] = index.stats.get("unavailable", 0) + 1
                    self._send(503, {"code": 14, "message": "service unavailable", "details": []})
                    return
                index.stats["requests"] += 1
                if self.headers.get("Api-Key") != api_key:
                    raise ApiError(401, "Invalid API Key", code=16)
                if len(raw) > MAX_REQUEST_BYTES:
                    raise ApiError(413, f"Request size {len(raw)} exceeds the maximum of {MAX_REQUEST_BYTES} bytes", code=8)
                body = json.loads(raw) if raw else {}
                route = (method, parts.path)
                if route == ("POST", "/vectors/upsert"):
                    out = index.upsert(body, len(raw))
                elif route == ("GET", "/vectors/list"):
                    out = index.list_ids(parse_qs(parts.query))
                elif route == ("GET", "/vectors/fetch"):
                    out = index.fetch(parse_qs(parts.query))
                elif route == ("POST", "/vectors/delete"):
                    out = index.delete(body)
                elif route == ("POST", "/query"):
                    out = index.query(body)
                elif parts.path == "/describe_index_stats":
                    out = index.describe()
                else:
                    raise ApiError(404, f"no route {method} {parts.path}", code=5)
                self._send(200, out)
            except ApiError as exc:
                index.stats["rejected"] += 1
                self._send(exc.status, {"code": exc.code, "message": exc.message, "details": []})
            except json.JSONDecodeError:
                index.stats["rejected"] += 1
                self._send(400, {"code": 3, "message": "malformed JSON", "details": []})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0, help="0 (default): a port the OS picks")
    p.add_argument("--dimension", type=int, default=384)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--down", action="store_true", help="start in an outage (503) until POST /_fake/up")
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(Index(a.dimension), a.api_key, {"up": not a.down}))
    print(f"PORT {server.server_address[1]}", flush=True)  # the port it listens on: no port chosen in advance
    server.serve_forever()


if __name__ == "__main__":
    main()
