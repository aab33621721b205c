"""`MeshSettings`: every knob of a mesh, read from `MESH_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore")

    home: Path = Field(Path("~/.mesh"), description="Data dir: embedded Redis, logs, artifacts.")
    redis_url: str | None = Field(
        None, description="Redis of the registry. Unset: start the embedded redis-server."
    )
    redis_restart_delay_s: float = Field(
        2.0, ge=0, description="Wait before restarting an embedded Redis that died."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys for the API; empty means no auth."
    )
    admin_token: str | None = Field(
        None,
        description="The operator's token. Unset: `mesh up` generates one under MESH_HOME "
        "(file `admin_token`, mode 0600) and the CLI reads it from there.",
    )
    token: str | None = Field(None, description="The CLI's store token (owner or admin).")
    fallback: str = Field("general", description="Specialist that answers when none fits.")
    router_method: Literal["centroid", "knn", "knn-max", "linear"] = "knn"
    router_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Fallback threshold; unset: the method's default."
    )
    router_refit: bool = Field(
        True,
        description="When the installed set changes, refit the router artifact's thresholds "
        "and linear head in the background (the old router serves meanwhile).",
    )
    router_refit_encoder: bool = Field(
        False, description="Also fine-tune the encoder on those refits (minutes of CPU)."
    )
    router_refit_delay_s: float = Field(
        2.0, ge=0, description="Wait for a burst of installs to settle before refitting."
    )
    router_finetune_steps: int = Field(150, ge=1, description="Encoder fine-tuning steps.")
    router_index_tags: bool = Field(
        False,
        description="Index each specialist's tags as texts of their own beside its examples "
        "and description (helps when tags name the domain; off: store tags are often metadata).",
    )
    router_lexical_weight: float = Field(
        0.7,
        ge=0,
        le=4,
        description="Weight of hashed word features beside the embedding in the linear head "
        "(router.lexical); 0 turns them off. Other methods ignore it.",
    )
    router_reload_s: float = Field(
        5.0, gt=0, description="How often the router checks for a new current artifact."
    )
    router_max_batch: int = Field(64, ge=1, description="Route calls per encoder call.")
    router_batch_wait_ms: float = Field(
        0.0, ge=0, description="Hold a batch open this long for more company (0: never wait)."
    )
    router_inflight: int = Field(
        2, ge=1, description="Batches encoding at once (one thread each): use spare cores."
    )
    auto_install: bool = Field(True, description="Install every newly published specialist.")
    gate_max_share: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Quality gate: installing a specialist (by `mesh install`, or by an "
        "operator's publish) that would take more than this share of another installed "
        "specialist's labelled queries needs --force (HTTP: force=true); 1.0 turns it off.",
    )
    max_hops: int = Field(3, ge=0, le=10, description="Specialist-to-specialist hops per request.")
    max_fanout: int = Field(4, ge=1, le=16, description="Asks one specialist may send per request.")
    token_budget: int = Field(2048, ge=1, description="Generated tokens per request, all hops.")
    deadline_s: float = Field(120.0, gt=0, description="Wall-clock limit per request.")
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        "none",
        description="OpenTelemetry spans (route -> specialist -> asks): `otlp` (the `otel` "
        "extra; endpoint from OTEL_EXPORTER_OTLP_ENDPOINT) or `console`; every replica reads "
        "MESH_OTEL_EXPORTER from its environment.",
    )
    panel_aggregator: str | None = Field(
        None, description="Who writes a panel's final answer (default: the top-ranked)."
    )
    max_prompt_chars: int = Field(32_000, ge=1, description="Larger requests get HTTP 400.")
    max_messages: int = Field(256, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    allow_pickle: bool = Field(
        False, description="Operator setting: load pickle weights (.bin/.pt), which can run code."
    )
    max_artifact_bytes: int = Field(
        256 * 2**20, ge=1, description="Largest upload into the store's artifact area."
    )
    max_body_bytes: int = Field(
        2 * 2**20, ge=1, description="Largest JSON/YAML request body (HTTP 413 beyond)."
    )
    max_route_chars: int = Field(2_000, ge=1, description="Largest /v1/route text (HTTP 400).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host headers accepted besides loopback and MESH_HOST (DNS rebinding guard).",
    )
    rate_limit_per_minute: int = Field(
        600, ge=0, description="Requests per minute per API key or client address (0: off)."
    )
    max_inflight_per_client: int = Field(
        8, ge=1, description="Requests one client may have open per specialist (fair share; 429)."
    )
    ray_num_cpus: float | None = Field(None, description="CPUs for a local Ray (default: all).")
    engine_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Compute threads per CPU engine replica (default: Ray's OMP_NUM_THREADS, "
        "1 for a replica reserving under one CPU).",
    )

    @property
    def data_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def artifacts_dir(self) -> Path:
        """Fetched artifacts and converted models: every local replica's cache folder."""
        return self.data_dir / "artifacts"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
