"""Chinese first, English on request: every text a template shows has its Chinese, and the choice is per user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.web.i18n import catalog, gettext_for, missing_translations, pick_lang

_COLLECTOR = Path(__file__).resolve().parents[2] / "collector"
_LITERAL = re.compile(r"""_\(\s*(?P<q>["'])(?P<text>.+?)(?P=q)\s*\)""")


def _template_texts() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(_COLLECTOR.glob("*/templates/*.html")):
        for m in _LITERAL.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(m.group("text"), set()).add(str(path.relative_to(_COLLECTOR)))
    return found


def test_every_text_in_every_template_has_its_chinese() -> None:
    texts = _template_texts()
    assert len(texts) > 10  # the scan found the templates
    missing = missing_translations(set(texts))
    assert not missing, "no Chinese for: " + "; ".join(f"{t!r} ({', '.join(sorted(texts[t]))})" for t in sorted(missing))


def test_catalog_entries_are_chinese() -> None:
    for english, chinese in catalog().items():
        assert chinese.strip(), english
        assert re.search(r"[\u4e00-\u9fff]", chinese) or english.isupper() or chinese == english, (english, chinese)


@pytest.mark.parametrize(("user_lang", "cookie", "accept", "expected"), [
    (None, None, None, "zh"),                      # Chinese by default
    (None, None, "en-US,en;q=0.9", "en"),          # a browser that asks for English first
    (None, None, "zh-CN,en;q=0.5", "zh"),
    (None, "en", "zh-CN", "en"),                   # the visitor's own switch beats the browser
    ("zh", "en", "en-US", "zh"),                   # the account's choice beats everything
    ("fr", "de", None, "zh"),                      # unknown values fall back to Chinese
])
def test_language_is_chosen_per_user(user_lang: str | None, cookie: str | None, accept: str | None, expected: str) -> None:
    assert pick_lang(user_lang=user_lang, cookie=cookie, accept_language=accept) == expected


def test_english_is_the_text_itself_and_chinese_translates() -> None:
    assert gettext_for("en")("Alerts") == "Alerts"
    assert gettext_for("zh")("Alerts") == "告警"
    assert gettext_for("zh")("a text nobody translated") == "a text nobody translated"
