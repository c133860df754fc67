"""The Jinja2 environment: the base templates here, each feature's own templates beside its views."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader

__all__ = ["templates"]

_HERE = Path(__file__).parent
_FEATURES = ("alerts", "people")

templates = Jinja2Templates(directory=str(_HERE / "templates"))
templates.env.loader = ChoiceLoader([FileSystemLoader(str(_HERE / "templates")),
                                     *(FileSystemLoader(str(_HERE.parent / f / "templates")) for f in _FEATURES)])
# "2026-11-25T15:02:00.197328215Z" -> "2026-11-25 15:02:00 UTC" for people; the datetime attribute keeps it all
templates.env.filters["readable_time"] = lambda text: f"{text[:10]} {text[11:19]} UTC"
