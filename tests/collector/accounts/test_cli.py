"""The user and api-token commands: existing ones keep working, disable/passwd/token revoke added, all audited."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from collector.__main__ import main
from collector.people.service import PeopleService
from collector.secrets import secret_hash
from collector.storage import open_store


def _run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: Path, *args: str,
         stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([*args[:2], "--data-dir", str(data), *args[2:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_users_and_tokens_from_the_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "collector"
    assert _run(capsys, monkeypatch, data, "user", "create", "--username", "ana", "--role", "auditor",
                "--password-stdin", stdin="a long password here\n")[0] == 0
    code, token, err = _run(capsys, monkeypatch, data, "api-token", "create", "--username", "ana", "--name", "export",
                            "--days", "10")
    token = token.strip()
    assert code == 0 and token.startswith("sa_") and "expires" in err
    code, listed, _ = _run(capsys, monkeypatch, data, "api-token", "list", "--username", "ana")
    token_id = secret_hash(token)[:16]
    assert code == 0 and token_id in listed and "export" in listed and token not in listed
    assert _run(capsys, monkeypatch, data, "user", "passwd", "--username", "ana", stdin="another long one\n")[0] == 0
    assert _run(capsys, monkeypatch, data, "api-token", "revoke", "--username", "ana", "--id", token_id)[0] == 0
    assert _run(capsys, monkeypatch, data, "user", "disable", "--username", "ana")[0] == 0
    code, users, _ = _run(capsys, monkeypatch, data, "user", "list")
    assert "ana\tauditor\tdisabled" in users
    assert _run(capsys, monkeypatch, data, "user", "enable", "--username", "ana")[0] == 0
    code, _, err = _run(capsys, monkeypatch, data, "user", "disable", "--username", "nobody")
    assert code != 0 and "no user" in err

    store = open_store(data)
    try:
        people = PeopleService(session_ttl_ns=10**12)
        with store.read() as tx:
            assert tx.get_token(token_hash=secret_hash(token)).revoked  # type: ignore[union-attr]
            actions = [e.action for e in tx.list_audit(cursor=None, limit=20).items]
        assert people.sign_in(store=store, username="ana", password="another long one", peer="cli").user.username == "ana"
    finally:
        store.close()
    for action in ("user.create", "api_token.create", "user.password_reset", "api_token.revoke", "user.disable",
                   "user.enable"):
        assert action in actions
