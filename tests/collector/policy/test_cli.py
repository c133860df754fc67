"""``shoumi-collector policy set|assign|list|show`` in-process on a real SQLite data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.__main__ import main


def test_set_assign_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    good, bad = tmp_path / "p.toml", tmp_path / "bad.toml"
    good.write_text('[policy]\nsensitive_folders = ["/srv/finance"]\n')
    bad.write_text('sensitive_folders = ["/srv/[x"]\n')
    assert main(["policy", "set", "finance", "--file", str(good), "--comment", "first", "--data-dir", data]) == 0
    assert capsys.readouterr().out.startswith("finance v1 ")
    assert main(["policy", "set", "finance", "--file", str(bad), "--data-dir", data]) == 2
    assert "sensitive_folders: unclosed '['" in capsys.readouterr().err
    assert main(["policy", "set", "finance", "--file", str(tmp_path / "missing.toml"), "--data-dir", data]) == 2
    assert main(["policy", "assign", "finance", "--label", "dept:finance", "--priority", "2", "--data-dir", data]) == 0
    assert main(["policy", "assign", "finance", "--label", "Not A Label", "--data-dir", data]) == 2
    capsys.readouterr()
    assert main(["policy", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out.split("\t")[:3] == ["finance", "v1", "dept:finance"]
    assert main(["policy", "show", "finance", "--data-dir", data]) == 0
    assert capsys.readouterr().out == 'sensitive_folders = ["/srv/finance"]\n'
    assert main(["policy", "show", "finance", "--version", "9", "--data-dir", data]) == 2
