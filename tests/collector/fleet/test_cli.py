"""The fleet's command line: multi-use tokens with labels, their list, an agent's labels; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.__main__ import main
from collector.fleet.models import AgentRecord
from collector.secrets import secret_hash
from collector.storage import open_store


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tokens_with_uses_and_labels_are_made_listed_and_agents_labelled(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    code, token, _ = _run(capsys, "enroll-token", "create", "--data-dir", d, "--uses", "200", "--label", "dept:finance",
                          "--label", "floor-3", "--name", "finance laptops", "--hours", "48")
    token = token.strip()
    assert code == 0 and token.startswith("se_")
    code, listing, _ = _run(capsys, "enroll-token", "list", "--data-dir", d)
    assert code == 0 and token not in listing
    assert listing.split("\t")[:3] == [secret_hash(token)[:12], "active", "0/200"]
    assert "dept:finance,floor-3\tfinance laptops" in listing
    store = open_store(tmp_path)
    try:
        with store.transaction() as tx:
            assert tx.consume_enroll_token(token_hash=secret_hash(token), now_ns=tx.get_enroll_token(
                secret_hash(token)).created_at_ns + 1, agent=AgentRecord("agt-1", b"k" * 32, "ws", "Linux", "0.1.0", 1)) is None
    finally:
        store.close()
    code, out, _ = _run(capsys, "agent", "labels", "--data-dir", d, "agt-1", "lab", "dept:it")
    assert (code, out.strip()) == (0, "dept:it,lab")
    code, out, _ = _run(capsys, "agent", "list", "--data-dir", d)
    assert out.strip().endswith("\tdept:it,lab")
    code, out, _ = _run(capsys, "agent", "labels", "--data-dir", d, "agt-1")
    assert (code, out.strip()) == (0, "-")


@pytest.mark.parametrize(("args", "says"), [
    (("enroll-token", "create", "--uses", "0"), "use count"),
    (("enroll-token", "create", "--uses", "100001"), "use count"),
    (("enroll-token", "create", "--label", "Finance"), "label"),
    (("enroll-token", "create", "--hours", "0"), "expiry"),
    (("enroll-token", "create", "--name", "x" * 101), "name"),
    (("agent", "labels", "agt-none", "lab"), "no agent"),
    (("agent", "labels", "agt-none", "a b"), "label"),
])
def test_bad_fleet_commands_exit_2_and_change_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      args: tuple[str, ...], says: str) -> None:
    code, out, err = _run(capsys, *args[:2], "--data-dir", str(tmp_path), *args[2:])
    assert code == 2 and says in err and out == ""
    store = open_store(tmp_path)
    try:
        with store.read() as tx:
            assert tx.list_enroll_tokens() == [] and tx.list_agents() == []
    finally:
        store.close()
