"""The HTTP ingress of the Serve application: the models (``/fraud/score``, ``/embed``, ``/models``)
and the versioned consumer API (``/v1/…``: datasets with presigned files, search, lookups).

Every route but ``/healthz`` (and the ``/docs`` page and its schema) needs an API key with the
route's scope (``Authorization: Bearer <key>``; the ``/ui`` report page also takes it as the
password of the browser's login prompt); ``/v1/blobs/…`` URLs carry their own signature.
Bodies are bounded before any route parses them (:mod:`rayapp.consumer.limits`), every request
is bounded in time (``RAYAPP_API_TIMEOUT_S`` → 504), and client mistakes answer 4xx with a message.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.
import asyncio
import base64
import binascii
import functools
import logging
from datetime import date
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle

from rayapp.catalog import Dataset
from rayapp.consumer.datasets import BadRequest, Delivery, NotFound
from rayapp.consumer.keys import ApiKey, KeyStore, Scope
from rayapp.consumer.limits import BodyLimits
from rayapp.consumer.signing import BadSignature
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.settings import Settings
from rayapp.sinks import make_sink
from rayapp.sinks.base import SinkError
from rayapp.sinks.vector_filter import FilterError
from serve import schemas as s

logger = logging.getLogger(__name__)

API_VERSION = "1"
api = FastAPI(
    title="rayapp",
    version=API_VERSION,
    docs_url=None,  # served below from local assets: the page works with no network
    redoc_url=None,
    description="Fraud scoring and embeddings on Ray Serve, and the lake's published datasets, search and lookups (v1).",
    responses={401: {"model": s.Error}, 403: {"model": s.Error}, 422: {"model": s.Error}, 504: {"model": s.Error}},
)
api.add_middleware(BodyLimits)
# Swagger UI 5 (OpenAPI 3.1) as the fastapi-swagger package ships it: no CDN.
api.mount("/docs/assets", StaticFiles(packages=[("fastapi_swagger", "resources")]), name="docs-assets")
bearer = HTTPBearer(auto_error=False, description="An API key from `rayapp keys create`.")
_ERRORS = {NotFound: 404, BadRequest: 422, FilterError: 422, BadSignature: 403}


def _error(status: int, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **({"details": details} if details is not None else {})})


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    response = _error(exc.status_code, str(exc.detail))
    for k, v in (exc.headers or {}).items():
        response.headers[k] = v
    return response


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The offending input is left out: it may be large, and it is the caller's own.
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
    return _error(422, "invalid request: " + "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details[:3]), details)


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)  # the path only: no query, no key
    return _error(500, "internal error (logged on the server)")


def _basic_password(request: Request) -> Optional[str]:
    """The password of an ``Authorization: Basic`` header (a browser's login prompt), if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2] or None
    except (binascii.Error, UnicodeDecodeError):
        return None


def authorize(scope: Optional[Scope], browser: bool = False) -> Callable[..., Optional[ApiKey]]:
    """A route dependency: the caller's key, which must be live and hold ``scope``. A ``browser``
    page also takes the key as the password of HTTP Basic auth (the browser asks for it)."""
    challenge = {"WWW-Authenticate": 'Basic realm="rayapp: any user name, the API key as password", charset="UTF-8"' if browser else "Bearer"}

    def check(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> Optional[ApiKey]:
        state = request.app.state
        if not state.auth:
            return None
        secret = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None
        if secret is None and browser:
            secret = _basic_password(request)
        if secret is None:
            raise HTTPException(401, "missing API key: send `Authorization: Bearer <key>`", headers=challenge)
        key = state.keys.verify(secret)
        if key is None:
            raise HTTPException(401, "unknown or revoked API key", headers=challenge)
        if not key.allows(scope):
            raise HTTPException(403, f"this key lacks the {scope.value if scope else ''} scope")
        return key

    return check


async def _listed(request: Request, field: str) -> Any:
    """The body's list: the body itself, or its ``field`` when it is an object (validated by the route)."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "body is not valid JSON") from None
    return body.get(field) if isinstance(body, dict) else body


def _dates(values: list[str]) -> list[date]:
    try:
        return [date.fromisoformat(v) for v in values]
    except ValueError:
        raise HTTPException(422, "date must be YYYY-MM-DD") from None


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=64)
@serve.ingress(api)
class Api:
    def __init__(self, scorer: DeploymentHandle, embedder: DeploymentHandle, settings: Settings) -> None:
        self.scorer = scorer
        self.embedder = embedder
        self.settings = settings
        self.timeout_s = settings.api_timeout_s
        self.lake = lake = Lake(settings)
        self.delivery = Delivery(lake, settings.api_url_ttl_s)
        self.stores: dict[str, Any] = {}
        api.state.auth = settings.api_auth
        api.state.keys = KeyStore(lake)
        api.state.max_body_bytes = settings.api_max_body_bytes

    def _store(self, name: str) -> Any:
        if name not in self.stores:
            self.stores[name] = make_sink(self.settings, name)
        return self.stores[name]

    async def _bounded(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, within the request time limit; library errors become 4xx/503."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(functools.partial(fn, *args)), self.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {self.timeout_s:g} s") from None
        except tuple(_ERRORS) as exc:
            raise HTTPException(_ERRORS[type(exc)], str(exc)) from None
        except SinkError as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from None

    async def _call(self, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {self.timeout_s:g} s") from None

    # ---- open ---------------------------------------------------------------------------------------

    @api.get("/healthz", response_model=s.Health, tags=["status"])
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> HTMLResponse:
        """Every route and schema (Swagger UI from local assets; "Authorize" takes an API key)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title="rayapp API", swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css", swagger_favicon_url="/docs/assets/favicon-32x32.png")  # fmt: skip

    @api.get("/ui", include_in_schema=False, dependencies=[Depends(authorize(Scope.DATASETS_READ, browser=True))])
    async def ui(self, run_id: Optional[str] = Query(None, max_length=200)) -> HTMLResponse:
        """The run report (``rayapp report``), made from the lake on each request."""
        from rayapp.report import build_report

        try:
            return HTMLResponse(await self._bounded(build_report, self.lake, run_id))
        except RayappError as exc:
            raise HTTPException(404, str(exc)) from None

    # ---- models -------------------------------------------------------------------------------------

    @api.get("/models", tags=["models"], dependencies=[Depends(authorize(None))])
    async def models(self) -> dict[str, Any]:
        fraud, emb = await self._call(asyncio.gather(self.scorer.describe.remote(), self.embedder.describe.remote()))
        return {"fraud": fraud, "embedder": emb}

    @api.post("/fraud/score", tags=["models"], dependencies=[Depends(authorize(Scope.SCORE))],
              openapi_extra={"requestBody": {"content": {"application/json": {"schema": s.ScoreRequest.model_json_schema()}}}})  # fmt: skip
    async def score(self, request: Request) -> Any:
        records = await _listed(request, "transactions")
        if not isinstance(records, list) or not records:
            return _error(422, 'expected a non-empty JSON list of transactions (or {"transactions": [...]})')
        if len(records) > s.MAX_TRANSACTIONS:
            return _error(413, f"at most {s.MAX_TRANSACTIONS} transactions per request")
        if not all(isinstance(r, dict) for r in records):
            return _error(422, "every transaction must be a JSON object")
        result = await self._call(self.scorer.score_online.remote(records))
        if "errors" in result:
            return _error(422, "invalid transactions", result["errors"])
        return {"scores": result["scores"]}

    @api.post("/embed", tags=["models"], dependencies=[Depends(authorize(Scope.SCORE))],
              openapi_extra={"requestBody": {"content": {"application/json": {"schema": s.EmbedRequest.model_json_schema()}}}})  # fmt: skip
    async def embed(self, request: Request) -> Any:
        texts = await _listed(request, "texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(422, 'expected {"texts": ["…", …]} with at least one string')
        if len(texts) > s.MAX_TEXTS:
            return _error(413, f"at most {s.MAX_TEXTS} texts per request")
        if any(len(t) > s.MAX_TEXT_CHARS for t in texts):
            return _error(413, f"texts are at most {s.MAX_TEXT_CHARS} characters (the model reads ~256 tokens)")
        vectors = await self._call(self.embedder.embed_online.remote(texts))
        return {"model": "all-MiniLM-L6-v2", "dim": len(vectors[0]), "vectors": vectors}

    # ---- v1: datasets -------------------------------------------------------------------------------

    @api.get("/v1/datasets", response_model=s.DatasetList, tags=["datasets"], dependencies=[Depends(authorize(Scope.DATASETS_READ))])
    async def datasets(self) -> dict[str, Any]:
        return {"datasets": await self._bounded(self.delivery.summaries)}

    @api.get("/v1/datasets/{name}", response_model=s.DatasetDetail, tags=["datasets"],
             dependencies=[Depends(authorize(Scope.DATASETS_READ))])  # fmt: skip
    async def dataset(self, name: str, history: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        return await self._bounded(self.delivery.detail, name, history)

    @api.get("/v1/datasets/{name}/files", response_model=s.FileList, tags=["datasets"],
             dependencies=[Depends(authorize(Scope.DATASETS_READ))])  # fmt: skip
    async def files(self, request: Request, name: str, version: Optional[int] = Query(None, ge=0),
                    date: list[str] = Query([], max_length=366, description="YYYY-MM-DD (repeatable)")) -> dict[str, Any]:  # fmt: skip
        base = str(request.base_url)
        return await self._bounded(self.delivery.files, name, version, _dates(date), base)

    @api.get("/v1/datasets/{name}/download", tags=["datasets"], dependencies=[Depends(authorize(Scope.DATASETS_READ))],
             response_class=StreamingResponse, responses={200: {"content": {"application/vnd.apache.parquet": {}, "text/csv": {}}}})  # fmt: skip
    async def download(self, name: str, format: str = Query("parquet", pattern="^(parquet|csv)$"), version: Optional[int] = Query(None, ge=0),
                       date: list[str] = Query([], max_length=366)) -> StreamingResponse:  # fmt: skip
        filename, chunks = await self._bounded(self.delivery.download, name, version, _dates(date), format)
        media = "application/vnd.apache.parquet" if format == "parquet" else "text/csv"
        return StreamingResponse(chunks, media_type=media, headers={"content-disposition": f'attachment; filename="{filename}"'})

    @api.get("/v1/blobs/{name}/{path:path}", tags=["datasets"], response_class=FileResponse,
             responses={403: {"model": s.Error}, 404: {"model": s.Error}})  # fmt: skip
    async def blob(self, name: str, path: str = Path(...), expires: int = Query(...), signature: str = Query(..., max_length=128)) -> FileResponse:
        """A file of a local lake by the URL `/v1/datasets/{name}/files` signed (no API key: the URL is the credential)."""
        target = await self._bounded(self.delivery.blob, name, path, expires, signature)
        return FileResponse(target, media_type="application/vnd.apache.parquet", filename=target.name)

    # ---- v1: search and lookups ---------------------------------------------------------------------

    @api.post("/v1/search", response_model=s.SearchResponse, tags=["search"], dependencies=[Depends(authorize(Scope.SEARCH))])
    async def search(self, body: s.SearchRequest) -> dict[str, Any]:
        dataset = Dataset.MERCHANT_VECTORS if body.kind == "merchants" else Dataset.TRANSACTION_VECTORS
        vectors = await self._call(self.embedder.embed_online.remote([body.query]))
        hits = await self._bounded(self._store("vector").search, dataset, vectors[0], body.k, body.filter)
        return {"kind": body.kind, "model": "all-MiniLM-L6-v2", "hits": hits}

    @api.get("/v1/transactions/{transaction_id}", response_model=s.Transaction, tags=["lookups"],
             dependencies=[Depends(authorize(Scope.LOOKUP))])  # fmt: skip
    async def transaction(self, transaction_id: str = Path(..., min_length=1, max_length=64)) -> dict[str, Any]:
        row = await self._bounded(self._store("postgres").transaction, transaction_id)
        if row is None:
            raise HTTPException(404, f"no transaction {transaction_id}")
        return row

    @api.get("/v1/accounts/{account_id}/network", response_model=s.Network, tags=["lookups"],
             dependencies=[Depends(authorize(Scope.LOOKUP))])  # fmt: skip
    async def network(self, account_id: str = Path(..., min_length=1, max_length=64), depth: int = Query(1, ge=1, le=2),
                      limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:  # fmt: skip
        found = await self._bounded(self._store("graph").network, account_id, depth, limit)
        if found is None:
            raise HTTPException(404, f"no account {account_id} in the graph")
        return found
