"""The agent's settings: command line over environment over defaults, each checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import AgentSettings, SettingsError


def test_the_command_line_wins_over_the_environment_which_wins_over_defaults() -> None:
    env = {"SHOUMI_AGENT_HEARTBEAT_SECONDS": "7", "SHOUMI_AGENT_BATCH_LINGER_S": "0.2",
           "SHOUMI_AGENT_WATCH": '["/a", "/b"]', "SHOUMI_AGENT_CAPTURE": "inotify"}
    settings = AgentSettings.load(env, heartbeat_seconds=5, state_dir="/tmp/s")
    assert (settings.heartbeat_seconds, settings.batch_linger_s, settings.capture) == (5.0, 0.2, "inotify")
    assert settings.watch == [Path("/a"), Path("/b")] and settings.state_dir == Path("/tmp/s")
    assert AgentSettings.load({"SHOUMI_AGENT_WATCH": "/one"}).watch == [Path("/one")]
    assert AgentSettings.load({}).batch_max_events == 500


@pytest.mark.parametrize("given,reason", [
    ({"batch_linger_s": 0.9}, "batch_linger_s: must be <= 0.5"),
    ({"heartbeat_seconds": 0}, "heartbeat_seconds: must be > 0"),
    ({"queue_capacity": 10}, "queue_capacity: must be >= 100"),
    ({"capture": "ebpf"}, "capture: one of"),
    ({"batch_max_events": "many"}, "batch_max_events: cannot read"),
    ({"spool_caps": 1}, "unknown setting 'spool_caps'"),
])
def test_a_bad_setting_is_refused_with_its_name(given: dict[str, object], reason: str) -> None:
    with pytest.raises(SettingsError, match=reason):
        AgentSettings.load({}, **given)
    env = {f"SHOUMI_AGENT_{k.upper()}": str(v) for k, v in given.items() if k != "spool_caps"}
    if env:
        with pytest.raises(SettingsError, match=reason.split(":")[0]):
            AgentSettings.load(env)
