"""Connecting to Ray: a cluster when an address is configured, otherwise a local instance."""

from __future__ import annotations

import logging

from rayapp.errors import RayappError
from rayapp.settings import Settings

logger = logging.getLogger(__name__)


def ensure_ray(settings: Settings) -> None:
    """Initialise Ray once per process.

    Joins ``settings.ray_address`` (``RAY_ADDRESS``: a ``ray start --head`` cluster, or the
    cluster a ``ray job submit`` driver runs on) when set; otherwise starts a local instance
    with ``settings.ray_num_cpus`` CPUs. Token authentication stays at Ray's default.
    """
    import ray

    if ray.is_initialized():
        return
    common = {"logging_level": logging.WARNING, "configure_logging": True, "log_to_driver": True}
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, **common)
            logger.info("joined Ray cluster at %s", settings.ray_address)
        else:
            ray.init(address="local", num_cpus=settings.ray_num_cpus, include_dashboard=False, **common)
            logger.info("started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))
    except ConnectionError as exc:
        raise RayappError(f"cannot connect to Ray at {settings.ray_address}: {exc}") from None
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.verbose_stats_logs = False
