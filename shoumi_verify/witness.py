"""shoumi-witness: cosigns the collector's tree heads, after checking each is consistent with the last.

    shoumi-witness init --key FILE                    make the witness's Ed25519 key (0600); print its public key
    shoumi-witness public-key --key FILE              print the public key (hex): give it to whoever verifies
    shoumi-witness serve --key FILE --state FILE --log-key HEX|FILE [--name NAME]
                         [--listen 127.0.0.1:0] [--ready-file FILE]

An auditor, a works council or a notary runs it, on a machine and with a key the collector's operator
does not control. It serves one route in the style of the C2SP tlog-witness protocol, on loopback by
default (put a TLS proxy in front for anything else):

``POST /add-checkpoint``: body ``old <size>``, the consistency proof (base64, one hash a line), a
blank line, then the checkpoint note (shoumi_verify/formats.py). The witness

* checks the collector's signature on the head (the log key it was given: 403 if it fails, 404 for
  another log's origin);
* answers 409 with its own size (``text/x.tlog.size``) if ``old`` is not the size it last cosigned;
* checks the consistency proof from its last cosigned head (RFC 9162), and refuses a fork, a head of
  the same size with another root or one that does not extend its history, with 422;
* persists the new head atomically (temporary file, fsync, rename, fsync of the folder) *before*
  answering, so after a crash it never cosigns a head inconsistent with one it answered for;
* answers 200 with its cosignature line: Ed25519 over ``cosignature/v1\\ntime <t>\\n`` ‖ checkpoint.

Requests are handled one at a time. Bodies over 64 KiB are refused (413).
"""

from __future__ import annotations

import argparse
import json
import logging
import stat
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi_verify.formats import (ProtocolError, cosignature_line, cosignature_message, ed25519_ok, key_id, origin_of,
                                   parse_add_checkpoint, tree_head_bytes)
from shoumi_verify.files import write_durably
from shoumi_verify.merkle import consistency_ok

__all__ = ["Witness", "WitnessRefused", "main", "load_or_create_key", "EMPTY_ROOT"]

log = logging.getLogger("shoumi.witness")
EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
MAX_BODY = 64 * 1024


class WitnessRefused(Exception):
    """A checkpoint the witness will not cosign: ``status`` is the HTTP answer, ``body`` its text."""

    def __init__(self, status: int, reason: str, body: bytes | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body if body is not None else (reason + "\n").encode()


def load_or_create_key(path: Path, *, create: bool = False) -> Ed25519PrivateKey:
    """The witness's key (PKCS#8 PEM, 0600); made if ``create`` and absent; refused if others may read it."""
    if create and not path.exists():
        write_durably(path, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path} is accessible to other users (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


@dataclass
class _State:
    tree_size: int
    root_hash: bytes


class Witness:
    """The witness's logic, apart from HTTP: one log, one key, one persisted last head."""

    def __init__(self, *, key: Ed25519PrivateKey, name: str, log_key: bytes, state_file: Path) -> None:
        self.key = key
        self.name = name
        self.public_key = key.public_key().public_bytes_raw()
        self.log_key = log_key
        self.origin = origin_of(log_key)
        self.state_file = state_file
        self._lock = threading.Lock()
        self.state = self._load()

    def _load(self) -> _State:
        if not self.state_file.exists():
            return _State(0, EMPTY_ROOT)
        doc = json.loads(self.state_file.read_text())
        if doc.get("origin") != self.origin:
            raise ValueError(f"{self.state_file} is the state of another log ({doc.get('origin')})")
        return _State(int(doc["tree_size"]), bytes.fromhex(doc["root_hash"]))

    def _persist(self, state: _State) -> None:
        data = json.dumps({"origin": self.origin, "tree_size": state.tree_size, "root_hash": state.root_hash.hex()})
        write_durably(self.state_file, data.encode())

    def add_checkpoint(self, body: bytes) -> bytes:
        """Checks and cosigns one checkpoint; returns the cosignature line or raises WitnessRefused."""
        try:
            req = parse_add_checkpoint(body)
        except ProtocolError as exc:
            raise WitnessRefused(400, f"malformed request: {exc}") from exc
        if req.origin != self.origin:
            raise WitnessRefused(404, f"unknown log {req.origin[:80]!r}; this witness follows {self.origin}")
        if req.key_hint != key_id(self.log_key)[:4] or not ed25519_ok(
                self.log_key, req.signature, tree_head_bytes(req.tree_size, req.root_hash, req.timestamp_ns)):
            raise WitnessRefused(403, "the checkpoint is not signed by the log's key")
        if req.old_size > req.tree_size:
            raise WitnessRefused(400, "old size is larger than the checkpoint's size")
        with self._lock:
            state = self.state
            if req.old_size != state.tree_size:
                raise WitnessRefused(409, f"old size {req.old_size} is not the last size cosigned",
                                     f"{state.tree_size}\n".encode())
            if not consistency_ok(state.tree_size, req.tree_size, state.root_hash, req.root_hash, list(req.proof)):
                log.error("REFUSED a fork: head of %d leaves (root %s) is not consistent with the cosigned head of "
                          "%d leaves (root %s)", req.tree_size, req.root_hash.hex(), state.tree_size,
                          state.root_hash.hex())
                raise WitnessRefused(422, f"not consistent with the head of {state.tree_size} leaves this witness "
                                     "cosigned: a fork, refused")
            new = _State(req.tree_size, req.root_hash)
            self._persist(new)  # before the answer: never cosign both sides of a fork, crash or not
            self.state = new
        now = int(time.time())
        signature = self.key.sign(cosignature_message(req.body, now))
        log.info("cosigned %s at %d leaves", self.origin, req.tree_size)
        return cosignature_line(self.name, key_id(self.public_key), now, signature)


def _handler(witness: Witness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "shoumi-witness"
        timeout = 30  # seconds a connection may stay silent

        def _answer(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/add-checkpoint":
                self._answer(404, b"no such route\n")
                return
            try:
                length = int(self.headers.get("Content-Length") or "-1")
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._answer(413 if length > MAX_BODY else 411, b"a body of at most 64 KiB, with its length\n")
                return
            body = self.rfile.read(length)
            try:
                line = witness.add_checkpoint(body)
            except WitnessRefused as exc:
                kind = "text/x.tlog.size" if exc.status == 409 else "text/plain; charset=utf-8"
                self._answer(exc.status, exc.body, kind)
                return
            self._answer(200, line)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/":
                doc = {"name": witness.name, "public_key": witness.public_key.hex(), "origin": witness.origin,
                       "tree_size": witness.state.tree_size, "root_hash": witness.state.root_hash.hex()}
                self._answer(200, json.dumps(doc).encode(), "application/json")
            else:
                self._answer(404, b"no such route\n")

        def log_message(self, fmt: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def _log_key(value: str) -> bytes:
    path = Path(value)
    text = path.read_text().split()[-1] if len(value) != 64 and path.exists() else value
    key = bytes.fromhex(text.strip())
    if len(key) != 32:
        raise ValueError("the log key is 32 bytes (64 hex digits)")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the witness's command line."""
    parser = argparse.ArgumentParser(prog="shoumi-witness", description="Cosign a Shoumi collector's tree heads")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="make the witness key (0600) and print its public key")
    init.add_argument("--key", type=Path, required=True)
    pub = sub.add_parser("public-key", help="print the witness's public key (hex)")
    pub.add_argument("--key", type=Path, required=True)
    serve = sub.add_parser("serve", help="serve POST /add-checkpoint")
    serve.add_argument("--key", type=Path, required=True)
    serve.add_argument("--state", type=Path, required=True, help="where the last cosigned head is kept")
    serve.add_argument("--log-key", required=True, help="the collector's tree-head public key (hex, or a file)")
    serve.add_argument("--name", default="witness", help="this witness's name in its cosignatures")
    serve.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    serve.add_argument("--ready-file", type=Path, help="written (JSON: url, public key) once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("init", "public-key"):
            key = load_or_create_key(args.key, create=args.command == "init")
            print(key.public_key().public_bytes_raw().hex())
            return 0
        if " " in args.name or not args.name or len(args.name) > 64:
            raise ValueError("--name is one word of at most 64 characters")
        witness = Witness(key=load_or_create_key(args.key), name=args.name, log_key=_log_key(args.log_key),
                          state_file=args.state)
        host, _, port = args.listen.rpartition(":")
        # a thread per connection (add_checkpoint holds the witness's lock): a client that never finishes its
        # request holds only its own thread, dropped after the handler's timeout
        server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), _handler(witness))
        server.daemon_threads = True
    except (OSError, ValueError, KeyError) as exc:
        print(f"shoumi-witness: {exc}", file=sys.stderr)
        return 2
    host_bound, port_bound = server.server_address[:2]
    url = f"http://{host_bound!s}:{port_bound}"
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "public_key": witness.public_key.hex(), "name": witness.name}))
        tmp.replace(args.ready_file)
    print(f"shoumi-witness: {witness.name} cosigns {witness.origin} on {url}", flush=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
