"""The Serve deployment options a specialist or a shared-base pool runs with: one place."""

from __future__ import annotations

from typing import Any, Protocol


class ReplicaLimits(Protocol):
    """What both `registry.manifest.Scaling` and `adapter_pool.PoolConfig` carry."""

    @property
    def min_replicas(self) -> int: ...
    @property
    def max_replicas(self) -> int: ...
    @property
    def target_ongoing_requests(self) -> float: ...
    @property
    def max_ongoing_requests(self) -> int: ...
    @property
    def max_queued_requests(self) -> int: ...


def deployment_options(
    name: str, actor_options: dict[str, Any], limits: ReplicaLimits
) -> dict[str, Any]:
    """Fixed replicas when min == max, else autoscaling; bounded queues so overload is a 503."""
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": limits.max_ongoing_requests,
        "max_queued_requests": limits.max_queued_requests,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 30,
    }
    if limits.min_replicas == limits.max_replicas:
        options["num_replicas"] = limits.max_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": limits.min_replicas,
            "max_replicas": limits.max_replicas,
            "target_ongoing_requests": limits.target_ongoing_requests,
        }
    return options
