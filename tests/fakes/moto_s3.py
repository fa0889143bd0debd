"""moto's S3 server in its own process on a port the OS picks; prints ``PORT <n>`` once it listens.

Run: ``python -m tests.fakes.moto_s3 [SECRET_ACCESS_KEY]``. Its own process (not in-process
threads): delta-rs calls that hold the GIL would starve an in-process server. Binding port 0
leaves no window in which another process could take a port chosen in advance.

moto accepts any presigned URL, also expired or altered ones. Real S3 does not, so this server
checks what S3 checks on a SigV4 query-signed request before moto sees it: the signature
(recomputed with the secret key the tests use) and ``X-Amz-Date`` + ``X-Amz-Expires``, answering
403 with S3's error codes (``SignatureDoesNotMatch``, ``AccessDenied`` "Request has expired").
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

DEFAULT_SECRET = "testing-secret"


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def presigned_signature(secret: str, method: str, host: str, path: str, query: list[tuple[str, str]]) -> str:
    """The SigV4 signature S3 expects for a query-signed request (UNSIGNED-PAYLOAD, host header signed)."""
    params = dict(query)
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    day, region, service, _ = scope.split("/")
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query) if k != "X-Amz-Signature")
    canonical = "\n".join([method, quote(path, safe="/-_.~"), canonical_query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _error(start_response: Callable[..., Any], code: str, message: str) -> Iterable[bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


class PresignedUrlChecks:
    """WSGI middleware: S3's checks of presigned (query-signed) requests."""

    def __init__(self, app: Callable[..., Any], secret: str) -> None:
        self.app = app
        self.secret = secret

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        params = dict(query)
        if "X-Amz-Signature" in params:
            try:
                when = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                expires = int(params["X-Amz-Expires"])
                expected = presigned_signature(self.secret, environ["REQUEST_METHOD"], environ.get("HTTP_HOST", ""),
                                               environ.get("PATH_INFO", "/"), query)  # fmt: skip
            except (KeyError, ValueError, IndexError):
                return _error(start_response, "AuthorizationQueryParametersError", "Query-string authentication is malformed")
            if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
                return _error(start_response, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided")
            if datetime.now(timezone.utc) > when + timedelta(seconds=expires):
                return _error(start_response, "AccessDenied", "Request has expired")
        return self.app(environ, start_response)


def main() -> None:
    secret = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SECRET
    app = PresignedUrlChecks(DomainDispatcherApplication(create_backend_app), secret)
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Event().wait()  # until the test session terminates it


if __name__ == "__main__":
    sys.exit(main())
