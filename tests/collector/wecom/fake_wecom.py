"""A local fake of the WeCom server API for tests: real HTTP on 127.0.0.1 port 0 in a daemon thread.

It answers as WeCom does (HTTP 200 and a JSON errcode): ``gettoken`` (40013 for a wrong corp id, 40001 for
a wrong secret), ``message/send`` (a msgid; unknown userids in ``invaliduser``), ``auth/getuserinfo``
(codes registered with ``add_code``, single use, 40029 otherwise), ``user/get``. Switches:

- ``expire_next = n``: the next n API calls answer 42001 (token expired) and the current tokens are dropped;
- ``rate_limit_next = n``: the next n ``message/send`` answer 45009;
- ``down = True``: every request gets its connection closed without an answer (WeCom unreachable).

``send_event(url, xml, crypto)`` plays WeCom's side of a callback: encrypts the XML with the app's
EncodingAESKey, signs it and POSTs it to the collector's callback URL. Use as a context manager
(``with FakeWeCom() as wecom:``) or the ``fake_wecom`` fixture: the server stops at the end by itself.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from collector.wecom.crypto import CallbackCrypto, signature

__all__ = ["FakeWeCom", "CORP_ID", "SECRET", "AGENT_ID", "TOKEN", "AES_KEY"]

CORP_ID = "ww0123456789abcdef"
SECRET = "s3cr3t-app-secret-0123456789abcdefghijkl"
AGENT_ID = 1000002
TOKEN = "callbacktoken123"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as WeCom hands out


@dataclass
class FakeWeCom:
    corp_id: str = CORP_ID
    secret: str = SECRET
    agent_id: int = AGENT_ID
    users: set[str] = field(default_factory=lambda: {"zhangsan", "lisi", "wangwu"})
    expires_in: int = 7200
    expire_next: int = 0
    rate_limit_next: int = 0
    down: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)  # message/send bodies taken
    calls: list[str] = field(default_factory=list)  # every API path asked, in order
    answers: list[int] = field(default_factory=list)  # errcode of every answer
    tokens_issued: int = 0
    base_url: str = ""
    _tokens: set[str] = field(default_factory=set)
    _codes: dict[str, str] = field(default_factory=dict)
    _msgids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- what the test arranges --------------------------------------------------------------------------
    def add_code(self, code: str, userid: str | None, openid: str | None = None) -> None:
        """An OAuth code that ``auth/getuserinfo`` turns into this userid (or an openid for a non-member)."""
        with self._lock:
            self._codes[code] = userid or f"openid:{openid or 'o-' + code}"

    def expire_tokens(self) -> None:
        """Every token handed out so far is expired from now on (42001)."""
        with self._lock:
            self._tokens.clear()

    def event_request(self, message_xml: str, crypto: CallbackCrypto | None = None, *,
                      timestamp: int | None = None, tamper: str = "") -> tuple[str, bytes]:
        """(query string, body) of a callback as WeCom sends it; ``tamper`` = "signature" | "corp" | "padding"."""
        crypto = crypto or CallbackCrypto(TOKEN, AES_KEY, self.corp_id)
        ts, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(5)
        receiver = "ww-somebody-else" if tamper == "corp" else None
        encrypted = crypto.encrypt(message_xml, receiver=receiver)
        if tamper == "padding":
            encrypted = _bad_padding(crypto, message_xml)
        sig = signature(crypto.token, ts, nonce, encrypted)
        if tamper == "signature":
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body = (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[{self.agent_id}]]></AgentID></xml>")
        return urlencode({"msg_signature": sig, "timestamp": ts, "nonce": nonce}), body.encode()

    def send_event(self, url: str, message_xml: str, crypto: CallbackCrypto | None = None, *,
                   timestamp: int | None = None, tamper: str = "") -> httpx.Response:
        """POSTs an encrypted, signed callback to the collector's callback URL, as WeCom does."""
        query, body = self.event_request(message_xml, crypto, timestamp=timestamp, tamper=tamper)
        return httpx.post(f"{url}{'&' if '?' in url else '?'}{query}", content=body,
                          headers={"content-type": "text/xml"}, timeout=5)

    @staticmethod
    def card_event(userid: str, task_id: str, agent_id: int = AGENT_ID) -> str:
        """The decrypted XML of a template card event (模板卡片事件推送) naming a message's task id."""
        return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[{userid}]]></FromUserName>"
                f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[read]]></EventKey>"
                f"<TaskId><![CDATA[{task_id}]]></TaskId><AgentID>{agent_id}</AgentID></xml>")

    def verify_url(self, url: str, crypto: CallbackCrypto | None = None, echo: str = "echo-1234") -> httpx.Response:
        """The GET WeCom makes when an admin saves the callback URL: the app must answer the decrypted echostr."""
        crypto = crypto or CallbackCrypto(TOKEN, AES_KEY, self.corp_id)
        ts, nonce = str(int(time.time())), secrets.token_hex(5)
        echostr = crypto.encrypt(echo)
        query = urlencode({"msg_signature": signature(crypto.token, ts, nonce, echostr), "timestamp": ts,
                           "nonce": nonce, "echostr": echostr})
        return httpx.get(f"{url}?{query}", timeout=5)

    # --- the API ---------------------------------------------------------------------------------------
    def _answer(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path)
        if path == "/cgi-bin/gettoken":
            if query.get("corpid") != self.corp_id:
                return {"errcode": 40013, "errmsg": "invalid corpid"}
            if query.get("corpsecret") != self.secret:
                return {"errcode": 40001, "errmsg": "invalid credential"}
            token = secrets.token_urlsafe(24)
            self._tokens.add(token)
            self.tokens_issued += 1
            return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in}
        if self.expire_next > 0:
            self.expire_next -= 1
            self._tokens.clear()
            return {"errcode": 42001, "errmsg": "access_token expired"}
        if query.get("access_token") not in self._tokens:
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        if path == "/cgi-bin/message/send" and method == "POST":
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return {"errcode": 45009, "errmsg": "api freq out of limit"}
            if body.get("agentid") != self.agent_id:
                return {"errcode": 40056, "errmsg": "invalid agentid"}
            if body.get("msgtype") not in ("textcard", "markdown", "text"):
                return {"errcode": 40008, "errmsg": "invalid message type"}
            users = [u for u in str(body.get("touser", "")).split("|") if u]
            invalid = [u for u in users if u not in self.users]
            if users and len(invalid) == len(users):
                return {"errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": "|".join(invalid)}
            self.sent.append(body)
            return {"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(invalid),
                    "msgid": f"msg{next(self._msgids):06d}"}
        if path == "/cgi-bin/auth/getuserinfo":
            who = self._codes.pop(query.get("code", ""), None)
            if who is None:
                return {"errcode": 40029, "errmsg": "invalid code"}
            if who.startswith("openid:"):
                return {"errcode": 0, "errmsg": "ok", "openid": who.removeprefix("openid:")}
            return {"errcode": 0, "errmsg": "ok", "userid": who, "user_ticket": "ticket-" + who}
        if path == "/cgi-bin/user/get":
            userid = query.get("userid", "")
            if userid not in self.users:
                return {"errcode": 60111, "errmsg": "userid not found"}
            return {"errcode": 0, "errmsg": "ok", "userid": userid, "name": userid, "status": 1}
        return {"errcode": 60011, "errmsg": "no privilege to access/modify contact/party/agent"}

    # --- the server --------------------------------------------------------------------------------------
    def start(self) -> "FakeWeCom":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                if fake.down:
                    self.close_connection = True
                    self.connection.close()
                    return
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("content-length", "0") or 0))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                with fake._lock:
                    answer = fake._answer(method, parts.path, dict(parse_qsl(parts.query)), body)
                    fake.answers.append(int(answer.get("errcode", 0)))
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeWeCom":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bad_padding(crypto: CallbackCrypto, message: str) -> str:
    """A ciphertext whose last byte decrypts to a padding value that is not PKCS#7 (33)."""
    import base64
    import struct

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    body = message.encode()
    plain = b"\0" * 16 + struct.pack(">I", len(body)) + body + crypto.corp_id.encode()
    plain += b"\0" * ((-len(plain) - 1) % 32) + bytes([33])
    key = base64.b64decode(crypto.encoding_aes_key + "=")
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()
