"""The reason a maintainer script leaves for the agent's signed agent.stop."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, strategies as st

from agent.stop_reason import MAX_LENGTH, STOP_REASON_FILE, take_stop_reason


def test_no_file_means_signal(tmp_path: Path) -> None:
    assert take_stop_reason(tmp_path) == "signal"


def test_the_reason_is_taken_once(tmp_path: Path) -> None:
    (tmp_path / STOP_REASON_FILE).write_text("package removal\n")
    assert take_stop_reason(tmp_path) == "package removal"
    assert not (tmp_path / STOP_REASON_FILE).exists()
    assert take_stop_reason(tmp_path) == "signal"


def test_an_empty_file_means_signal(tmp_path: Path) -> None:
    (tmp_path / STOP_REASON_FILE).write_bytes(b"  \n")
    assert take_stop_reason(tmp_path) == "signal"


@given(st.binary(max_size=2000))
def test_any_content_gives_one_short_printable_line(raw: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / STOP_REASON_FILE).write_bytes(raw)
        reason = take_stop_reason(Path(d))
    assert 0 < len(reason) <= MAX_LENGTH
    assert reason.isprintable() and "\n" not in reason
