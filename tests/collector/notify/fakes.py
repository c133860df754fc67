"""Local fake servers on loopback for the notification tests: a WeCom group robot and an SMTP server.

Both are real servers on 127.0.0.1 port 0 in a thread. The robot behaves as WeCom's does: HTTP 200
with errcode 0, and errcode 45009 once 20 messages came within a minute (by the test's clock, so no
test waits a minute); it can be told to fail the next requests with a 500 or a 45009. The SMTP
server speaks enough of RFC 5321 for smtplib (EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET,
NOOP, QUIT) and can be told to answer 451 to the next messages.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import ipaddress
import json
import socketserver
import ssl
import threading
from pathlib import Path
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

MINUTE_NS = 60 * 10**9


class Clock:
    """A clock the test moves by hand (nanoseconds), shared by the worker and the fake robot."""

    def __init__(self, start_ns: int = 1_780_000_000 * 10**9) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@dataclass
class FakeRobot:
    """What the robot took and answered."""

    clock: Callable[[], int]
    key: str = "693a91f6-7aaa-4bc4-97a0-0ec2sifa5aaa"
    accepted: list[str] = field(default_factory=list)  # markdown contents taken (errcode 0)
    answers: list[int] = field(default_factory=list)  # errcode (or -HTTP status) of every request
    fail_next: list[int] = field(default_factory=list)  # 500 -> HTTP 500, 45009 -> errcode 45009, per request
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _taken_at: list[int] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.bodies.append(body)
        if path != f"/cgi-bin/webhook/send?key={self.key}":
            self.answers.append(93000)
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if failure == 500:
                self.answers.append(-500)
                return 500, {"errcode": -1, "errmsg": "system busy"}
            self.answers.append(failure)
            return 200, {"errcode": failure, "errmsg": "api freq out of limit" if failure == 45009 else "refused"}
        now = self.clock()
        self._taken_at = [t for t in self._taken_at if t > now - MINUTE_NS]
        if len(self._taken_at) >= 20:
            self.answers.append(45009)
            return 200, {"errcode": 45009, "errmsg": "api freq out of limit"}
        content = body.get("markdown", {}).get("content")
        if body.get("msgtype") != "markdown" or not isinstance(content, str):
            self.answers.append(40008)
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        if len(content.encode()) > 4096:
            self.answers.append(40058)
            return 200, {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}
        self._taken_at.append(now)
        self.accepted.append(content)
        self.answers.append(0)
        return 200, {"errcode": 0, "errmsg": "ok"}


def serve_robot(robot: FakeRobot) -> Iterator[FakeRobot]:
    """Runs the robot on 127.0.0.1:0 until the generator is closed."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                status, answer = robot.answer(self.path, json.loads(raw))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    robot.url = f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/webhook/send?key={robot.key}"
    try:
        yield robot
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class FakeSmtp:
    """What the SMTP server took."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    fail_next: int = 0  # answer 451 to this many MAIL commands
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this server context
    credentials: tuple[str, str] | None = None  # demand AUTH PLAIN with these before MAIL
    logins: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0


def serve_smtp(smtp: FakeSmtp) -> Iterator[FakeSmtp]:
    """Runs the SMTP server on 127.0.0.1:0 until the generator is closed."""
    lock = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def finish(self) -> None:
            super().finish()
            if isinstance(self.request, ssl.SSLSocket):  # socketserver closes only the socket it handed in
                self.request.close()

        def handle(self) -> None:
            self.reply("220 fake.test ESMTP")
            sender, rcpts = "", list[str]()
            secure, authed = False, smtp.credentials is None
            while True:
                raw = self.rfile.readline(4096)
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    offers = ["fake.test", "8BITMIME"]
                    offers += ["STARTTLS"] if smtp.tls is not None and not secure else []
                    offers += ["AUTH PLAIN"] if smtp.credentials is not None else []
                    self.reply("\r\n".join(f"250{'-' if i < len(offers) - 1 else ' '}{o}" for i, o in enumerate(offers)))
                elif verb == "STARTTLS" and smtp.tls is not None and not secure:
                    self.reply("220 go ahead")
                    self.request = smtp.tls.wrap_socket(self.request, server_side=True)
                    self.rfile = self.request.makefile("rb")
                    self.wfile = self.request.makefile("wb", buffering=0)
                    secure = True
                elif verb == "AUTH" and smtp.credentials is not None:
                    user, password = smtp.credentials
                    given = base64.b64decode(line.split()[2]).split(b"\0")[1:]
                    authed = given == [user.encode(), password.encode()]
                    if authed:
                        smtp.logins.append(user)
                    self.reply("235 2.7.0 accepted" if authed else "535 5.7.8 bad credentials")
                elif verb == "MAIL" and not authed:
                    self.reply("530 5.7.0 authentication required")
                elif verb == "MAIL":
                    with lock:
                        refuse = smtp.fail_next > 0
                        smtp.fail_next -= 1 if refuse else 0
                    if refuse:
                        self.reply("451 4.3.0 try again later")
                        continue
                    sender, rcpts = line.split(":", 1)[1].strip(" <>").split(">")[0], []
                    self.reply("250 OK")
                elif verb == "RCPT":
                    rcpts.append(line.split(":", 1)[1].strip(" <>"))
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 end with .")
                    lines = []
                    while True:
                        chunk = self.rfile.readline()
                        if chunk in (b".\r\n", b""):
                            break
                        lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    parsed = email.message_from_bytes(b"".join(lines), policy=email.policy.default)  # an EmailMessage (policy)
                    with lock:
                        smtp.messages.append(parsed)
                        smtp.envelopes.append((sender, rcpts))
                    self.reply("250 OK queued")
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 OK")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    smtp.port = server.server_address[1]
    try:
        yield smtp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context, and a client's that trusts only it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake smtp")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client
