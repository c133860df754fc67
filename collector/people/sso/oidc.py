"""OpenID Connect, authorization code flow with PKCE (S256), through Authlib; the ID token checked with joserfc.

Discovery (``ISSUER/.well-known/openid-configuration``) is read at the first sign-in and kept; its
``issuer`` must equal the configured one (OIDC Discovery §4.3). The ID token must be signed by a key
of the provider's JWKS (an unknown ``kid`` reads the JWKS once more, for key rotation), with an
algorithm the provider announces, and carry our ``aud``, the provider's ``iss``, an ``exp`` not
passed, and the ``nonce`` of this sign-in (Authlib's ``CodeIDToken`` rules, ``at_hash`` included).
This module speaks HTTP to the provider and nothing else: no store, no session.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from authlib.common.errors import AuthlibBaseError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from collector.people.sso import ProviderUnavailable, SignInRefused
from collector.settings import OidcSettings

__all__ = ["OidcProvider", "Identity"]

_LEEWAY_S = 60  # clocks of the collector and the provider may differ this much


class Identity:
    """Who the provider says signed in: the subject, a name to show, the groups."""

    def __init__(self, subject: str, name: str, groups: list[str]) -> None:
        self.subject = subject
        self.name = name
        self.groups = groups


class OidcProvider:
    """One OpenID Connect provider and this collector's client registration at it."""

    name = "oidc"

    def __init__(self, cfg: OidcSettings, client_secret: str | None, *, transport: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.label = cfg.label
        self._secret = client_secret
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"OidcProvider(issuer={self.cfg.issuer!r}, client_id={self.cfg.client_id!r})"

    def _http(self) -> httpx.Client:
        return httpx.Client(timeout=self.cfg.timeout_seconds, transport=self._transport, follow_redirects=False)

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._http() as http:
                answer = http.get(url)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, f"{what} unreachable ({type(exc).__name__})") from None
        if answer.status_code != 200:
            raise ProviderUnavailable(self.name, f"{what} answered HTTP {answer.status_code}")
        try:
            data = answer.json()
        except ValueError:
            raise ProviderUnavailable(self.name, f"{what} is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderUnavailable(self.name, f"{what} is not a JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (read once)."""
        with self._lock:
            if self._metadata is None:
                data = self._get_json(f"{self.cfg.issuer}/.well-known/openid-configuration", "discovery")
                if data.get("issuer") != self.cfg.issuer:
                    raise ProviderUnavailable(self.name, f"discovery names issuer {str(data.get('issuer'))[:100]!r}, "
                                                         f"not {self.cfg.issuer!r}")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(data.get(key), str):
                        raise ProviderUnavailable(self.name, f"discovery has no {key}")
                self._metadata = data
            return self._metadata

    def _keys(self, *, force: bool = False) -> KeySet:
        with self._lock:
            jwks = self._jwks
        if jwks is None or force:
            jwks = self._get_json(self.metadata()["jwks_uri"], "JWKS")
            with self._lock:
                self._jwks = jwks
        try:
            return KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderUnavailable(self.name, f"the JWKS does not parse ({type(exc).__name__})") from None

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(self.cfg.client_id, self._secret, scope=self.cfg.scopes, redirect_uri=redirect_uri,
                            code_challenge_method="S256", timeout=self.cfg.timeout_seconds, transport=self._transport)

    def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        """Where the browser goes to sign in: the authorize endpoint with state, nonce and the S256 challenge."""
        endpoint = self.metadata()["authorization_endpoint"]
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(endpoint, state=state, nonce=nonce, code_verifier=verifier)
        return str(url)

    def sign_in(self, *, code: str, verifier: str, nonce: str, redirect_uri: str) -> Identity:
        """Exchanges the code (with the PKCE verifier) and checks the ID token; SignInRefused when it does not hold."""
        meta = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier,
                                           grant_type="authorization_code")
        except AuthlibBaseError as exc:  # invalid_grant: a replayed, expired or foreign code
            raise SignInRefused(f"the provider refused the code ({exc.error})") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, f"token endpoint unreachable ({type(exc).__name__})") from None
        except ValueError:
            raise ProviderUnavailable(self.name, "the token endpoint's answer is not JSON") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the provider answered without an ID token")
        claims = self.verify_id_token(id_token, nonce=nonce, access_token=token.get("access_token"))
        groups = claims.get(self.cfg.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        name = claims.get(self.cfg.username_claim) or claims.get("email") or ""
        return Identity(str(claims["sub"]), str(name), [str(g) for g in groups if isinstance(g, (str, int))])

    def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """The ID token's claims once its signature, issuer, audience, expiry and nonce hold."""
        algorithms = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in algorithms if a != "none"]
        registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
        try:
            try:
                decoded = jwt.decode(id_token, self._keys(), registry=registry)
            except InvalidKeyIdError:  # the provider may have rotated its keys since we read them
                decoded = jwt.decode(id_token, self._keys(force=True), registry=registry)
        except InvalidKeyIdError:
            raise SignInRefused("ID token signed by a key the provider does not publish") from None
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"ID token signature does not verify ({type(exc).__name__})") from None
        params = {"nonce": nonce, "client_id": self.cfg.client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(decoded.claims, decoded.header,
                             {"iss": {"essential": True, "values": [self.cfg.issuer]},
                              "aud": {"essential": True, "values": [self.cfg.client_id]},
                              "sub": {"essential": True}, "exp": {"essential": True}}, params)
        try:
            claims.validate(now=int(self._clock()), leeway=_LEEWAY_S)
        except JoseError as exc:  # expired, wrong nonce, audience or issuer, a missing claim
            raise SignInRefused(f"ID token refused: {exc.error}: {exc.description or ''}".strip(": ")) from None
        if not isinstance(decoded.claims.get("sub"), str) or not decoded.claims["sub"]:
            raise SignInRefused("ID token without a subject")
        return dict(decoded.claims)
