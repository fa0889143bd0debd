"""Run leases: at most one run of a stage at a time on a lake.

A lease is a sequence of small JSON objects under ``<lake>/_ledger/leases/<stage>/``, one per
*epoch* (``000000000001.json``, …). The highest epoch is the current lease. To take the lease a
run creates the next epoch's object with create-if-absent — a hard link locally, a PUT with
``If-None-Match: *`` on S3 — so of two runs racing for it exactly one wins. It may do so only
when the current epoch is released or expired (its owner's last heartbeat is older than
``lease_ttl_s``), or with ``--force``. While the run lives a thread rewrites its epoch object
with a fresh heartbeat; it also notices when a newer epoch exists (someone forced the lease
away) and marks the lease lost. The run releases the lease when it ends; a killed run simply
stops heart-beating, and the next run takes over once the lease has expired, marks the dead run
``abandoned`` and removes the staging files it left.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rayapp.errors import RayappError
from rayapp.lake import Lake

logger = logging.getLogger(__name__)


class LeaseBusy(RayappError):
    """Another live run holds the stage's lease."""


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class LeaseState:
    """One epoch's object."""

    stage: str
    run_id: str
    epoch: int
    owner: str
    acquired_at: float
    heartbeat_at: float
    ttl_s: float
    released: bool = False
    forced: bool = False

    def expires_at(self) -> float:
        return self.heartbeat_at + self.ttl_s

    def live(self, now: float) -> bool:
        return not self.released and self.expires_at() > now

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LeaseState":
        return cls(**json.loads(data))


@dataclass
class Lease:
    """A held lease; call :meth:`release` when the run ends (``with`` does it)."""

    lake: Lake
    state: LeaseState
    #: The lease this one replaced when that one was expired or taken with --force (None otherwise).
    replaced: LeaseState | None = None
    lost_to: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return epoch_uri(self.lake, self.state.stage, self.state.epoch)

    def start_heartbeat(self) -> None:
        interval = max(0.2, self.state.ttl_s / 4)
        self._thread = threading.Thread(target=self._beat, args=(interval,), name=f"lease-{self.state.stage}", daemon=True)
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                newer = self.lake.read_bytes(epoch_uri(self.lake, self.state.stage, self.state.epoch + 1))
                if newer is not None:
                    self.lost_to = LeaseState.from_bytes(newer).run_id
                    logger.error("run %s lost the %s lease to run %s", self.state.run_id, self.state.stage, self.lost_to)
                    return
                self.state.heartbeat_at = _now()
                self.lake.write_bytes(self.uri, self.state.to_bytes())
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; expiry needs several
                logger.warning("lease heartbeat for %s failed: %s", self.state.stage, exc)

    def release(self) -> None:
        """Stop heart-beating and mark the epoch released (unless it was taken away)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lost_to is None:
            self.state.released = True
            self.state.heartbeat_at = _now()
            try:
                self.lake.write_bytes(self.uri, self.state.to_bytes())
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                logger.warning("could not release the %s lease (it expires in %.0fs): %s", self.state.stage, self.state.ttl_s, exc)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lease_dir(lake: Lake, stage: str) -> str:
    return lake.path("_ledger", "leases", stage)


def epoch_uri(lake: Lake, stage: str, epoch: int) -> str:
    return lake.path("_ledger", "leases", stage, f"{epoch:012d}.json")


def current(lake: Lake, stage: str) -> LeaseState | None:
    """The stage's current lease object (released or not), None when it never had one."""
    epochs = [int(n[:-5]) for n in lake.list_names(lease_dir(lake, stage)) if n.endswith(".json") and n[:-5].isdigit()]
    for epoch in sorted(epochs, reverse=True):
        data = lake.read_bytes(epoch_uri(lake, stage, epoch))
        if data:
            return LeaseState.from_bytes(data)
    return None


def acquire(lake: Lake, stage: str, run_id: str, *, ttl_s: float, force: bool = False, heartbeat: bool = True) -> Lease:
    """Take the stage's lease for ``run_id``.

    Raises:
        LeaseBusy: a live run holds it (and ``force`` is off), or another run took it first.
    """
    for _ in range(3):
        held = current(lake, stage)
        now = _now()
        if held is not None and held.live(now) and not force:
            raise LeaseBusy(
                f"{stage} is already running as run {held.run_id} on {held.owner} (last heartbeat {now - held.heartbeat_at:.0f}s ago; "
                f"its lease expires at {_iso(held.expires_at())} unless renewed). Wait for it, or take over with --force"
            )
        epoch = (held.epoch if held is not None else 0) + 1
        state = LeaseState(stage, run_id, epoch, f"{socket.gethostname()}:{os.getpid()}", now, now, ttl_s, forced=force)
        if lake.create_exclusive(epoch_uri(lake, stage, epoch), state.to_bytes()):
            replaced = held if held is not None and not held.released else None
            if replaced is not None and force and replaced.live(now):
                logger.warning("--force: took the %s lease from run %s (last heartbeat %.0fs ago)", stage, replaced.run_id, now - replaced.heartbeat_at)
            lease = Lease(lake, state, replaced)
            if heartbeat:
                lease.start_heartbeat()
            _prune(lake, stage, epoch)
            return lease
    raise LeaseBusy(f"{stage}: another run took the lease at the same moment; try again")


def _prune(lake: Lake, stage: str, epoch: int, keep: int = 5) -> None:
    for name in lake.list_names(lease_dir(lake, stage)):
        if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) <= epoch - keep:
            lake.remove(f"{lease_dir(lake, stage)}/{name}")
