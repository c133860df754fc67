"""The agent's settings: one typed object built in __main__ and passed down.

Fields come from the command line or the environment (prefix SHOUMI_AGENT_).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AgentSettings"]


class AgentSettings(BaseSettings):
    """Everything the agent process needs to know besides its policy."""

    model_config = SettingsConfigDict(env_prefix="SHOUMI_AGENT_")

    state_dir: Path = Path("/var/lib/shoumi-agent")
    watch: list[Path] = Field(default_factory=list, description="sensitive folders to watch (adds to the policy)")
    config: Path | None = Field(None, description="agent.toml holding the [policy] table")
    capture: Literal["auto", "fanotify", "inotify"] = Field(
        "auto", description="reads and writes: fanotify (root) or inotify; auto picks fanotify when usable")
    mount_poll_s: float = Field(2.0, gt=0, description="how often removable mounts are looked for")
    collector: str | None = Field(None, description="HOST:PORT; default: the one enrolled with")
    attributed_user: str | None = Field(None, description="user for events without a pid (inotify)")
    batch_max_events: int = Field(500, ge=1, le=1000)
    in_flight_batches: int = Field(16, ge=1, le=1000)
    batch_linger_s: float = Field(0.15, ge=0, le=0.5, description="how long a part-full batch waits for more events")
    heartbeat_seconds: float = Field(30.0, gt=0)
    queue_capacity: int = Field(20_000, ge=100, description="events waiting for the spool; a full queue waits")
    max_hash_bytes: int = Field(256 * 1024 * 1024, ge=0)
    spool_cap_bytes: int = Field(1 << 30, ge=64 * 1024, description="refuse (and count) new events beyond this")
