"""Chinese (the default) and English for every page, chosen per user.

Templates write English and wrap it: ``{{ _("Alerts") }}``. Each feature keeps its Chinese beside
its templates in ``messages.zh.toml`` (English text = Chinese text); this module merges them once.
A text without a translation shows in English, and ``missing_translations()`` lists them for the
test that keeps the catalogs complete.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Callable

__all__ = ["LANGS", "DEFAULT_LANG", "catalog", "gettext_for", "pick_lang", "missing_translations", "LANG_COOKIE"]

LANGS: tuple[str, ...] = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "shoumi_lang"
_COLLECTOR = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def catalog() -> dict[str, str]:
    """English text -> Chinese, from every feature's messages.zh.toml."""
    merged: dict[str, str] = {}
    for path in sorted(_COLLECTOR.glob("*/messages.zh.toml")):
        with path.open("rb") as f:
            for english, chinese in tomllib.load(f).items():
                if not isinstance(chinese, str):
                    raise ValueError(f"{path}: {english!r} must map to a string")
                merged[english] = chinese
    return merged


def gettext_for(lang: str) -> Callable[[str], str]:
    """Returns the translating function of a language (English returns its argument)."""
    if lang != "zh":
        return lambda text: text
    zh = catalog()
    return lambda text: zh.get(text, text)


def pick_lang(*, user_lang: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The user's own choice first, then the browser's cookie, then Chinese (English only if asked for)."""
    for choice in (user_lang, cookie):
        if choice in LANGS:
            return choice
    if accept_language and accept_language.strip().lower().startswith("en"):
        return "en"
    return DEFAULT_LANG


def missing_translations(texts: set[str]) -> set[str]:
    """Which of these texts have no Chinese."""
    return {t for t in texts if t not in catalog()}
