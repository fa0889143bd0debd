"""Shared fixtures: a session-wide local Ray instance (2 CPUs), per-test settings, a moto S3 server."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

os.environ.setdefault("RAYAPP_LOG_FORMAT", "text")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
#: Opt-in real servers (README "Tests against real servers"): RAYAPP_IT_* read here, before the
#: runner's own RAYAPP_* settings are kept from leaking into tests.
IT = {k: v for k, v in os.environ.items() if k.startswith("RAYAPP_IT_")}
for _k in list(os.environ):
    if _k.startswith("RAYAPP_") and _k != "RAYAPP_LOG_FORMAT":
        del os.environ[_k]
os.environ.pop("RAY_ADDRESS", None)

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def stop_embedded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, stop every embedded PostgreSQL server whose data directory is
    under this session's temp dirs (a server a killed process left behind), and nothing else."""
    yield
    import psutil

    base = str(tmp_path_factory.getbasetemp())
    ours = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmd and cmd[cmd.index("-D") + 1].startswith(base):
            ours.append(proc)
    for proc in ours:
        try:
            proc.terminate()  # postmaster: "smart" shutdown, children follow
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(ours, timeout=20)
    for proc in alive:
        proc.kill()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray instance with an explicit CPU budget shared by all integration tests."""
    import ray

    if not ray.is_initialized():
        from rayapp.logs import runtime_env_hook

        # as rayapp.runtime.ensure_ray does: every worker logs like the driver
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env=runtime_env_hook())
    yield
    ray.shutdown()


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    from rayapp.settings import load_settings

    return load_settings(overrides={"data_dir": str(tmp_path / "data")})


def _free_port() -> int:
    """A port the OS reports free now; another process may take it before we bind: use ``on_a_free_port``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_a_free_port(start: Callable[[int], T], attempts: int = 5) -> T:
    """``start(port)`` on a port the OS just reported free; when another process took the port first
    (``start`` raises PortInUseError), try a fresh port instead of failing the test."""
    from rayapp.errors import PortInUseError

    for attempt in range(attempts):
        try:
            return start(_free_port())
        except PortInUseError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 (a stand-in for MinIO), in its own process, on a port it picks."""
    from tests.servers import start_reporting_port, stop

    proc, port = start_reporting_port("tests.fakes.moto_s3")
    yield {
        "s3_endpoint_url": f"http://127.0.0.1:{port}",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing-secret",
        "s3_region": "us-east-1",
    }
    stop(proc)


@pytest.fixture
def s3_bucket(s3_server: dict[str, str]) -> str:
    import uuid

    import boto3

    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server["s3_endpoint_url"],
        aws_access_key_id=s3_server["s3_access_key_id"],
        aws_secret_access_key=s3_server["s3_secret_access_key"],
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture
def falkordb(tmp_path: Path) -> Iterator[str]:
    """A FalkorDB server (Bolt + openCypher) of the test's own: ``bolt://127.0.0.1:<port>?database=rayapp&…``.

    One server per test, one graph per server: FalkorDB's Bolt support is experimental and keeps a
    connection's graph with its socket number, so a later client reusing the number can land in
    the graph of one that left (it also leaves that client's first handshake unanswered, which the
    engine's short connection timeout and retries absorb)."""
    from tests.servers import start_falkordb, stop

    proc, port = start_falkordb(tmp_path / "falkordb")
    # Short connect timeouts: a stalled handshake (above) costs 2 s before the retry, not 5.
    yield f"bolt://127.0.0.1:{port}?database=rayapp&connection_timeout=2&connection_acquisition_timeout=2"
    stop(proc)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL *server* (not pgserver): RAYAPP_IT_POSTGRES_URL when set, else Debian's
    PostgreSQL 15 from /usr/lib/postgresql/15/bin started here. CI installs the latter and sets
    RAYAPP_REQUIRE_SERVERS=1, so there a missing server fails instead of skipping."""
    from tests.servers import PG15_BIN, start_postgres15, stop_postgres15

    if IT.get("RAYAPP_IT_POSTGRES_URL"):
        yield IT["RAYAPP_IT_POSTGRES_URL"]
        return
    if not (PG15_BIN / "initdb").exists():
        if os.environ.get("RAYAPP_REQUIRE_SERVERS"):
            pytest.fail(f"no PostgreSQL server: {PG15_BIN} is missing and RAYAPP_IT_POSTGRES_URL is unset")
        pytest.skip("no PostgreSQL server here (apt-get install postgresql-15, or set RAYAPP_IT_POSTGRES_URL)")
    root, port = start_postgres15()
    yield f"postgresql://rayapp@127.0.0.1:{port}/postgres"
    stop_postgres15(root)


def fresh_postgres_database(url: str, name: str) -> str:
    """A new, empty database on the server at ``url`` (dropped first if a run left it); its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@pytest.fixture
def clickhouse_http(tmp_path: Path) -> Iterator[str]:
    """ClickHouse's HTTP interface over a real ClickHouse engine (chDB; tests/fakes/chdb_http.py):
    ``http://default:@127.0.0.1:<port>/default``, for the store's server path."""
    from tests.servers import start_reporting_port, stop

    proc, port = start_reporting_port("tests.fakes.chdb_http", "--path", str(tmp_path / "chdb-http"))
    yield f"http://default:@127.0.0.1:{port}/default"
    stop(proc)
