"""WeCom web login (企业微信网页授权登录 / 扫码登录): the redirect to WeCom, and the code back to a userid.

The browser goes to ``authorize_url`` with the corp id, the agent id, our callback and a state; WeCom
sends it back with ``code`` and ``state``; ``auth/getuserinfo`` with the corp's access token turns the
code into the member's ``userid`` (H10's ``collector.wecom.client.WeComClient``: the token is cached
and renewed there). Someone outside the corp (only an openid) is refused. WeCom says who signed in,
not their groups: roles are granted in the collector (collector/people/sso/service.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from collector.people.sso import ProviderUnavailable, SignInRefused
from collector.settings import WeComLoginSettings
from collector.wecom.client import WeComClient, WeComError

__all__ = ["WeComLogin"]


class WeComLogin:
    """One WeCom application used for signing in to the collector."""

    name = "wecom"

    def __init__(self, cfg: WeComLoginSettings, secret: str, *, transport: Any = None) -> None:
        self.cfg = cfg
        self.label = cfg.label
        self.client = WeComClient(cfg.corp_id, secret, base_url=cfg.api_base_url, timeout_s=cfg.timeout_seconds,
                                  transport=transport)

    def __repr__(self) -> str:
        return f"WeComLogin(corp_id={self.cfg.corp_id!r}, agent_id={self.cfg.agent_id!r})"

    def authorization_url(self, *, redirect_uri: str, state: str) -> str:
        """WeCom's page: inside WeCom the OAuth authorize URL, elsewhere the QR sign-in page."""
        if "oauth2/authorize" in self.cfg.authorize_url:
            query = urlencode({"appid": self.cfg.corp_id, "redirect_uri": redirect_uri, "response_type": "code",
                               "scope": "snsapi_base", "state": state, "agentid": self.cfg.agent_id})
            return f"{self.cfg.authorize_url}?{query}#wechat_redirect"
        query = urlencode({"login_type": "CorpApp", "appid": self.cfg.corp_id, "agentid": self.cfg.agent_id,
                           "redirect_uri": redirect_uri, "state": state})
        return f"{self.cfg.authorize_url}?{query}"

    def userid(self, code: str) -> str:
        """The member who signed in with this code; SignInRefused for a bad code or someone outside the corp."""
        if not code or len(code) > 512 or not code.isprintable():
            raise SignInRefused("WeCom callback without a usable code")
        try:
            found = self.client.oauth_user(code)
        except WeComError as exc:
            if exc.retry:
                raise ProviderUnavailable(self.name, str(exc)) from None
            raise SignInRefused(f"WeCom refused the code (errcode {exc.errcode})") from None
        if not found.userid:
            raise SignInRefused("not a member of the corp (WeCom gave only an openid)")
        return found.userid
