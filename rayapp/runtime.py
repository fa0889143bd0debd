"""Connecting to Ray: a cluster when an address is configured, otherwise a local instance."""

from __future__ import annotations

import logging
import os

from rayapp import logs
from rayapp.errors import RayappError
from rayapp.settings import Settings

logger = logging.getLogger(__name__)

#: Loggers whose INFO lines are Ray's own bookkeeping (execution plans, "finished in"): warnings
#: only on the console unless ``log_level`` is DEBUG; they stay in Ray's log files.
_CHATTY = ("ray.data",)


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing answers at a ``host:port`` or ``ray://host:port`` Ray address; None when something
    listens there, or for another form (``auto``: Ray finds the cluster itself)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"{address!r} is not host:port"
    if parts.scheme not in ("tcp", "ray") or not host or not port:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def ensure_ray(settings: Settings) -> None:
    """Initialise Ray once per process.

    Joins ``settings.ray_address`` (``RAY_ADDRESS``: a ``ray start --head`` cluster, or the
    cluster a ``ray job submit`` driver runs on) when set; otherwise starts a local instance
    with ``settings.ray_num_cpus`` CPUs. Token authentication stays at Ray's default. Every worker
    of the job logs like the driver (``rayapp.logs.worker_setup``). Ray Data shows one progress bar
    per dataset on a terminal and none otherwise (the stage's own log lines say what happened).
    """
    import ray

    if ray.is_initialized():
        return
    quiet = settings.log_level != "DEBUG"
    if quiet:  # gRPC's "skipping fork() handlers" notices each time an embedded engine forks a server
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    common = {"logging_level": logging.WARNING, "configure_logging": True, "log_to_driver": True,
              "runtime_env": logs.runtime_env_hook()}  # fmt: skip
    if settings.ray_address and (why := unreachable(settings.ray_address)):
        # ray.init would retry for many minutes, printing GCS timeouts: say it now, in one line
        raise RayappError(f"cannot connect to Ray at {settings.ray_address}: {why}; start the cluster (cluster/start-head.sh) "
                          "or unset RAY_ADDRESS to run on a local instance")  # fmt: skip
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, **common)
            logger.info("joined Ray cluster at %s", settings.ray_address)
        else:
            if quiet:  # a local instance of our own: Ray's notice about its token is not news
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(address="local", num_cpus=settings.ray_num_cpus, include_dashboard=False, **common)
            logger.info("started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))
    except ConnectionError as exc:
        raise RayappError(f"cannot connect to Ray at {settings.ray_address}: {exc}") from None
    logs.publish()
    from ray.data import DataContext  # imported: Ray Data has configured its loggers

    if quiet:
        for name in _CHATTY:
            for handler in logging.getLogger(name).handlers:
                if handler.name == "console":  # Ray Data's own log file keeps every line
                    handler.setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled" notices

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = logs.is_terminal()
    ctx.enable_operator_progress_bars = False
    ctx.verbose_stats_logs = False
    ctx.enable_auto_log_stats = False
    _read_data_limits_often()


#: How often (seconds) a Ray Data execution re-reads the CPUs it may use (Ray's default: 1 s).
DATA_LIMITS_REFRESH_S = 0.05


def _read_data_limits_often() -> None:
    """Ray Data (2.5x/2.6x) learns the resources a dataset may use from its autoscaling coordinator
    actor, asynchronously, and re-reads the answer once a second; until the first answer arrives
    the budget is zero and the dataset runs one task at a time. So every dataset spent its first
    second on half of this 2-CPU machine: ~0.3 s lost per stage of the pipeline (8 half-second
    tasks on 2 CPUs: 3.1 s, against 2.6 s when the answer is re-read every 50 ms; an ingest of
    1M rows 3.0 s -> 2.7 s). The setting is Ray's internal class attribute: when a Ray version no
    longer has it, nothing is changed."""
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:  # pragma: no cover - a Ray without this module
        return
    current = getattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", None)
    if isinstance(current, (int, float)) and current > DATA_LIMITS_REFRESH_S:
        ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = DATA_LIMITS_REFRESH_S
