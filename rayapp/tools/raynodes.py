"""Stop the Ray nodes of one cluster on this machine — and only those.

``ray stop`` (and worse, ``ray stop --force``) ends every Ray process of the user on the machine,
other clusters and other people's jobs included. A cluster is found here by its GCS port: the
``gcs_server`` listening on it, every process started with ``--gcs-address=…:<port>`` (raylets,
dashboards, agents, log monitors), and all their descendants (the workers and actors).

Usage: ``python -m rayapp.tools.raynodes stop --port 6379`` (what ``cluster/stop.sh`` runs).
Like ``ray stop``, it then removes Ray's note of the current cluster (``/tmp/ray/ray_current_cluster``)
when it names the stopped one: otherwise a later ``ray.init()`` or ``ray status`` without an
address would try to reach the dead cluster for minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psutil


def cluster_processes(port: int) -> list[psutil.Process]:
    """Every process of the cluster whose GCS listens on ``port`` (roots and their descendants)."""
    markers = (f"--gcs_server_port={port}", f":{port}")
    roots: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        joined = " ".join(cmd)
        if markers[0] in joined or any(a.startswith(("--gcs-address=", "--gcs_address=")) and a.endswith(markers[1]) for a in cmd):
            roots.append(proc)
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for p in [root, *root.children(recursive=True)]:
                found[p.pid] = p
        except psutil.Error:
            continue
    return list(found.values())


def stop(port: int, timeout_s: float = 15.0) -> int:
    """Terminate the cluster's processes, then kill what is left; returns how many there were."""
    procs = cluster_processes(port)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def forget_address(port: int, temp_dir: str | None = None) -> bool:
    """Remove Ray's ``ray_current_cluster`` file if it names a cluster on GCS ``port``; whether it did."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(temp_dir)
    try:
        with open(path) as f:
            address = f.read().strip()
    except OSError:
        return False
    if not address.endswith(f":{port}"):
        return False  # another cluster's note: not ours to touch
    try:
        os.remove(path)
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayapp.tools.raynodes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stop", help="stop the cluster whose GCS listens on --port")
    s.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    n = stop(args.port)
    forget_address(args.port)
    print(f"stopped {n} process(es) of the Ray cluster on GCS port {args.port} in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
