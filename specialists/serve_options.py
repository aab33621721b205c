"""The Serve deployment options a specialist or a shared-base pool runs with: one place."""

from __future__ import annotations

import os
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
    @property
    def look_back_period_s(self) -> float: ...
    @property
    def upscale_delay_s(self) -> float: ...
    @property
    def downscale_delay_s(self) -> float: ...


def deployment_options(
    name: str, actor_options: dict[str, Any], limits: ReplicaLimits
) -> dict[str, Any]:
    """Fixed replicas when min == max, else autoscaling (min 0: scale to zero when idle; the
    first request then waits for a replica to start); bounded queues so overload is a 503."""
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
            "look_back_period_s": limits.look_back_period_s,
            "upscale_delay_s": limits.upscale_delay_s,
            "downscale_delay_s": limits.downscale_delay_s,
        }
    return options


# Every Ray head node has this resource. The control plane (and the HTTP proxy, `HeadOnly`) stays
# on the head: worker nodes come and go with the autoscaler or a failure, and a gateway on a lost
# node would cut every connection it held; specialists are what workers are for.
ON_HEAD = {"node:__internal_head__": 0.001}


def head_actor_options(num_cpus: float) -> dict[str, Any]:
    """Ray actor options of a control-plane replica: `num_cpus`, on the head node."""
    return {"num_cpus": num_cpus, "resources": dict(ON_HEAD)}


# `mesh up` sets this to "0" before Ray starts, so a local Ray uses 127.0.0.1 as its node IP;
# every worker inherits it.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_replica_on_loopback() -> None:
    """On a local mesh, bind this replica's inter-deployment gRPC server to 127.0.0.1.

    Ray Serve 2.60 starts that server on `[::]:0` (every interface) after the deployment's
    constructor returns, whatever Ray's node IP is, so anyone on the network could call a
    replica directly and skip the gateway's checks. Each mesh deployment calls this first in
    its constructor. On a cluster (the variable unset) replicas must reach each other across
    nodes, so nothing changes there; the private name is looked up defensively and a test
    (`test_ray_and_the_mesh_listen_on_loopback_only`) checks the result.
    """
    if os.environ.get(LOCAL_ONLY_ENV) != "0":
        return
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "mesh_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    on_loopback.mesh_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback


def app_handle(app: str, specialist: str, what: str) -> Any:
    """A handle to the Serve app `app` that `specialist` forwards to; a 503 naming `what` (its
    shared base pool, its vLLM app) when that app is not running."""
    from ray import serve

    from registry.errors import UnavailableError

    try:
        return serve.get_app_handle(app)
    except Exception as error:  # Serve raises its own exception for an unknown app
        raise UnavailableError(f"{specialist}: {what} {app} is not running ({error})") from None
