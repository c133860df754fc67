"""A small OpenID Connect provider on loopback for the tests: discovery, authorize, token, JWKS, real signed JWTs.

It does what a provider must for the collector to be checked against it: codes are single-use and
bound to the client, the redirect URI and the PKCE S256 challenge; ID tokens are RS256 JWTs signed
with a real RSA key published in the JWKS. Knobs let a test forge what an attacker or a broken
provider would send (another key, an expired token, a wrong nonce or audience).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "shoumi-collector"
CLIENT_SECRET = "s3cret-of-the-client-at-the-idp"


@dataclass
class Person:
    """Who signs in at the provider when the browser comes to /authorize."""

    sub: str
    username: str
    groups: list[str] = field(default_factory=list)


@dataclass
class Forge:
    """What the next ID tokens get wrong, on purpose."""

    other_key: bool = False     # signed by a key the JWKS does not have (same kid)
    unknown_kid: bool = False   # signed by a key with a kid the JWKS does not have
    expired: bool = False
    nonce: str | None = None
    audience: str | None = None
    issuer: str | None = None


_MADE: list[RSAKey] = []


def _keys() -> list[RSAKey]:
    """The provider's key, an attacker's with the same kid, a stranger's: made once per test run (2048-bit RSA)."""
    if not _MADE:
        _MADE.extend([RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"}),
                      RSAKey.generate_key(2048, parameters={"kid": "k1"}),
                      RSAKey.generate_key(2048, parameters={"kid": "k9"})])
    return _MADE


class FakeOidcProvider:
    """The provider; ``issuer`` is its base URL once started."""

    def __init__(self) -> None:
        self.key, self.attacker_key, self.stranger_key = _keys()
        self.person: Person | None = None  # None: nobody can sign in (removed at the provider)
        self.people: dict[str, Person] = {}  # sub -> the person, while they exist
        self.forge = Forge()
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_calls = 0
        self.refused: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeOidcProvider":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign_in_as(self, person: Person | None) -> None:
        """Who signs in next at /authorize (None: the person was removed at the provider)."""
        self.person = person

    def id_token(self, claims: dict[str, Any]) -> str:
        key = self.attacker_key if self.forge.other_key else self.stranger_key if self.forge.unknown_kid else self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    # --- HTTP -----------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": idp.issuer, "authorization_endpoint": f"{idp.issuer}/authorize",
                                     "token_endpoint": f"{idp.issuer}/token", "jwks_uri": f"{idp.issuer}/jwks",
                                     "response_types_supported": ["code"], "subject_types_supported": ["public"],
                                     "id_token_signing_alg_values_supported": ["RS256"],
                                     "code_challenge_methods_supported": ["S256"]})
                elif url.path == "/jwks":
                    self._json(200, KeySet([idp.key]).as_dict(private=False))
                elif url.path == "/authorize":
                    self._authorize(query)
                else:
                    self._json(404, {"error": "not_found"})

            def _authorize(self, q: dict[str, str]) -> None:
                if (q.get("client_id") != CLIENT_ID or q.get("response_type") != "code"
                        or q.get("code_challenge_method") != "S256" or not q.get("code_challenge")
                        or "openid" not in q.get("scope", "").split()):
                    idp.refused.append("authorize")
                    self._json(400, {"error": "invalid_request"})
                    return
                target = q["redirect_uri"]
                if idp.person is None:
                    answer = {"error": "access_denied", "state": q.get("state", "")}
                else:
                    code = secrets.token_urlsafe(16)
                    idp.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": target, "nonce": q.get("nonce"),
                                       "person": idp.person, "used": False}
                    answer = {"code": code, "state": q.get("state", "")}
                self.send_response(302)
                self.send_header("Location", f"{target}?{urlencode(answer)}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                idp.token_calls += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if auth != expected:
                    idp.refused.append("client")
                    self._json(401, {"error": "invalid_client"})
                    return
                grant = idp.codes.get(form.get("code", ""))
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if grant is None or grant["used"] or grant["redirect_uri"] != form.get("redirect_uri") \
                        or grant["challenge"] != challenge or form.get("grant_type") != "authorization_code":
                    idp.refused.append("grant")
                    self._json(400, {"error": "invalid_grant"})
                    return
                grant["used"] = True
                person: Person = grant["person"]
                now = int(time.time())
                forge = idp.forge
                claims = {"iss": forge.issuer or idp.issuer, "sub": person.sub, "aud": forge.audience or CLIENT_ID,
                          "iat": now - (7200 if forge.expired else 0), "exp": now + (-3600 if forge.expired else 300),
                          "nonce": forge.nonce if forge.nonce is not None else grant["nonce"],
                          "preferred_username": person.username, "groups": person.groups}
                self._json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                 "expires_in": 300, "id_token": idp.id_token(claims)})

        return Handler
