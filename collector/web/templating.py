"""The Jinja2 environment and ``render``: the base templates here, each feature's templates beside its views.

Every page goes through ``render``, which gives the template ``_`` (the user's language), ``lang``,
``user``, ``csrf_token`` (to put in every form that changes something, as a hidden field
``csrf_token``; scripts send it as the ``X-CSRF-Token`` header) and ``can`` (permission check for
showing links and buttons; the routes enforce it again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader

from collector.domain.roles import allowed
from collector.people.models import User
from collector.web.i18n import LANG_COOKIE, gettext_for, pick_lang

__all__ = ["templates", "render", "lang_of"]

_HERE = Path(__file__).parent
_FEATURE_TEMPLATES = sorted(p for p in _HERE.parent.glob("*/templates") if p.parent != _HERE)

templates = Jinja2Templates(directory=str(_HERE / "templates"))
templates.env.loader = ChoiceLoader([FileSystemLoader(str(_HERE / "templates")),
                                     *(FileSystemLoader(str(p)) for p in _FEATURE_TEMPLATES)])
# "2026-11-25T15:02:00.197328215Z" -> "2026-11-25 15:02:00 UTC" for people; the datetime attribute keeps it all
templates.env.filters["readable_time"] = lambda text: f"{text[:10]} {text[11:19]} UTC" if text else ""


def lang_of(request: Request, user: User | None) -> str:
    """The language a page is shown in."""
    return pick_lang(user_lang=getattr(user, "lang", None), cookie=request.cookies.get(LANG_COOKIE),
                     accept_language=request.headers.get("accept-language"))


def render(request: Request, name: str, context: Mapping[str, Any] | None = None, *, user: User | None,
           status_code: int = 200) -> HTMLResponse:
    """Renders a page in the user's language with what every page needs."""
    lang = lang_of(request, user)
    ctx: dict[str, Any] = {
        "_": gettext_for(lang), "lang": lang, "user": user,
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "can": (lambda permission: user is not None and allowed(user.role, permission)),
        **(context or {}),
    }
    response: HTMLResponse = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    return response
