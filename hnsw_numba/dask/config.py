"""Dask settings for clusters that serve a sharded index.

``dask.config.set(CLUSTER_CONFIG)`` before creating the cluster (``LocalCluster``, or the
same keys as ``DASK_...`` environment variables for ``dask scheduler`` / ``dask worker``).
"""

from __future__ import annotations

__all__ = ["CLUSTER_CONFIG", "QUIET_MONITORING"]

# Dask samples its own health many times a second (defaults in the comments). When the
# workers fill every core, that sampling competes with the searches: on 2 cores the
# scheduler, nannies and workers took ~12 % of a core per compute, and 2 workers searched
# 1.40x as fast as one with these defaults against 1.85x with the values here
# (docs/scaling.md). The costs: no profile page on the dashboard, a blocked event loop
# noticed after 0.5 s, a worker over its memory limit caught within 1 s.
QUIET_MONITORING: dict[str, object] = {
    "distributed.admin.tick.interval": "500ms",  # event-loop health check (20 ms)
    "distributed.worker.profile.enabled": False,  # statistical profiler (10 ms)
    "distributed.admin.system-monitor.interval": "2s",  # (500 ms)
    "distributed.worker.memory.monitor-interval": "1s",  # nanny memory monitor (100 ms)
    "distributed.deploy.cluster-repr-interval": "10s",  # LocalCluster widget (500 ms)
}

# Work stealing moves a loosely restricted shard task to an idle worker, which then opens
# that shard too: the answer is the same, the RAM per worker no longer S / workers.
CLUSTER_CONFIG: dict[str, object] = {"distributed.scheduler.work-stealing": False, **QUIET_MONITORING}
