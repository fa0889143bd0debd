"""Peak memory and disk of a benchmark run: the driver, every process of the connected Ray session
(GCS, raylet, dashboard, workers and actors), and the disk under the scratch directory.

Memory is summed as PSS (proportional set size, from ``/proc/<pid>/smaps_rollup``) so pages shared
between processes (the object store's mapping, shared libraries) count once, not once per process;
where PSS cannot be read, RSS stands in.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _pss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def session_pids() -> set[int]:
    """This driver and every process of its Ray session: those whose command line names the session
    directory (GCS, raylet, dashboard, monitors) and all their descendants (workers, actors)."""
    import psutil
    import ray

    pids = {os.getpid()}
    if not ray.is_initialized():
        return pids
    session = os.path.basename(ray._private.worker._global_node.get_session_dir_path())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if session in " ".join(proc.info["cmdline"] or []):
                pids.add(proc.info["pid"])
                pids.update(c.pid for c in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@dataclass
class Peaks:
    driver_mib: float = 0.0
    processes_mib: float = 0.0
    processes: int = 0
    disk_growth_mib: float = 0.0
    samples: int = 0
    at_peak: dict[str, float] = field(default_factory=dict)


class MemoryWatch:
    """Samples every ``interval_s`` in a thread, as a context manager::

        with MemoryWatch(scratch_dir) as watch:
            ...
        watch.peaks.processes_mib
    """

    def __init__(self, disk_path: str | Path, interval_s: float = 0.5) -> None:
        self.disk_path = str(disk_path)
        self.interval_s = interval_s
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)
        self._disk0 = 0

    def __enter__(self) -> "MemoryWatch":
        Path(self.disk_path).mkdir(parents=True, exist_ok=True)
        self._disk0 = shutil.disk_usage(self.disk_path).used
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(session_pids())

    def sample(self, pids: set[int]) -> None:
        import psutil

        sizes: dict[int, int] = {}
        for pid in pids:
            size = _pss(pid)
            if size is None:
                try:
                    size = psutil.Process(pid).memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            sizes[pid] = size
        p = self.peaks
        p.samples += 1
        total = sum(sizes.values()) / MIB
        p.driver_mib = max(p.driver_mib, psutil.Process().memory_info().rss / MIB)
        if total > p.processes_mib:
            p.processes_mib, p.processes = total, len(sizes)
        p.disk_growth_mib = max(p.disk_growth_mib, (shutil.disk_usage(self.disk_path).used - self._disk0) / MIB)

    def _run(self) -> None:
        pids, listed = session_pids(), time.monotonic()
        while not self._stop.wait(self.interval_s):
            if time.monotonic() - listed > 2.0:  # workers come and go
                pids, listed = session_pids(), time.monotonic()
            self.sample(pids)

    def report(self) -> dict[str, Any]:
        p = self.peaks
        return {
            "driver_peak_rss_mib": round(p.driver_mib),
            "processes_peak_pss_mib": round(p.processes_mib),
            "processes_at_peak": p.processes,
            "disk_peak_growth_mib": round(p.disk_growth_mib),
            "samples": p.samples,
        }




def spill_stats() -> dict[str, int]:
    """MiB the object store spilled to disk and restored in this Ray session (0 when it never spilled),
    and the bytes its spill directories still hold."""
    import glob
    import re

    import ray
    from fsspec.implementations.local import LocalFileSystem
    from ray._private.internal_api import memory_summary

    session = ray._private.worker._global_node.get_session_dir_path()
    text = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)
    spilled = re.search(r"Spilled (\d+) MiB", text)
    restored = re.search(r"Restored (\d+) MiB", text)
    dirs = glob.glob(os.path.join(session, "ray_spilled_objects*")) + glob.glob(os.path.join(os.path.dirname(session), "ray_spilled_objects*"))
    left = sum(int(LocalFileSystem().du(d)) for d in dirs)
    return {"spilled_mib": int(spilled.group(1)) if spilled else 0, "restored_mib": int(restored.group(1)) if restored else 0,
            "spill_left_bytes": left}  # fmt: skip


__all__ = ["MemoryWatch", "session_pids", "spill_stats"]
