"""The collector's command line and composition root: settings are built here and passed down.

    shoumi-collector serve --data-dir DIR --grpc-listen HOST:PORT --http-listen HOST:PORT
    shoumi-collector enroll-token create [--uses N] [--label L ...] [--name TEXT] [--hours H] | list | revoke ID|TOKEN
    shoumi-collector agent list | revoke AGENT_ID | labels AGENT_ID [LABEL ...] --data-dir DIR
    shoumi-collector user create|list|disable|enable|passwd --data-dir DIR ...   (collector/people/cli.py)
    shoumi-collector api-token create|list|revoke --data-dir DIR --username U ...
    shoumi-collector verify --data-dir DIR [--database-url URL] [--tree-public-key HEX] [--jobs N]
    shoumi-collector legal-hold place|release|list --data-dir DIR ...  (collector/retention/cli.py)
    shoumi-collector retention run|status --data-dir DIR           (collector/retention/cli.py)
    shoumi-collector privacy export EMPLOYEE --out FILE --reason TEXT --data-dir DIR
    shoumi-collector case export CASE_ID --out BUNDLE.zip --data-dir DIR      (collector/evidence/cli.py)
    shoumi-collector tree-head --data-dir DIR [--size N]            (a signed head as JSON, for shoumi-verify)
    shoumi-collector policy set|assign|list|show ... --data-dir DIR   (collector/policy/cli.py)
    shoumi-collector rules check FILE          (exit 0: valid, the rules in force; 2: FILE:LINE: KEY: message)
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from collector.settings import CollectorSettings, parse_listen

__all__ = ["main"]

log = logging.getLogger("shoumi.collector")


def _settings(args: argparse.Namespace) -> CollectorSettings:
    given: dict[str, Any] = {}
    for field in ("data_dir", "database_url", "grpc_listen", "http_listen", "enroll_listen", "rules_file"):
        value = getattr(args, field, None)
        if value is not None:
            given[field] = value
    detection: dict[str, Any] = {}
    if getattr(args, "read_burst_threshold", None) is not None:
        detection["read_burst_threshold"] = args.read_burst_threshold
    if getattr(args, "read_burst_window_minutes", None) is not None:
        detection["read_burst_window_minutes"] = args.read_burst_window_minutes
    if getattr(args, "insecure_dev", False):
        given["insecure_dev"] = True
    settings = CollectorSettings(**given)
    if detection:
        settings = settings.model_copy(
            update={"detection": settings.detection.model_copy(update=detection)}
        )
    return settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _cmd_serve(settings: CollectorSettings) -> int:
    import contextlib
    from typing import Iterator

    import uvicorn

    class _QuietServer(uvicorn.Server):
        # uvicorn re-raises SIGTERM after its shutdown, which would kill the process before the
        # gRPC server drains; we own the signals instead (see _stop).
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    from collector.wiring import build_services, reload_rules, sign_tree_head

    built = build_services(settings)
    from collector import gc_tuning

    gc_tuning.tune()  # after start-up: what it made is frozen out of every collection
    http_host, http_port = parse_listen(settings.http_listen)
    family = socket.AF_INET6 if ":" in http_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((http_host, http_port))
    sock.listen(2048)  # callers who come as soon as the address file says where wait in the backlog, not refused
    http_port = sock.getsockname()[1]
    listeners = built.grpc.start()
    grpc_port = listeners.agent_port
    worker = None
    if settings.detection_enabled and settings.detection_process:
        from collector.detection.worker import DetectionWorker

        worker = DetectionWorker(settings)  # detection on the other core; started again if it ends on its own
        worker.start()
        built.background.every(5.0, "detection-worker", worker.ensure_running)
    built.background.start()
    config = uvicorn.Config(built.app, log_level="warning", access_log=False, lifespan="off")
    server = _QuietServer(config)

    def _stop(signum: int, _frame: object) -> None:
        log.warning("signal %s: stopping", signum)
        server.should_exit = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    def _reload(_signum: int, _frame: object) -> None:
        reload_rules(built)  # a failed reload keeps the last good
        if worker is not None:
            worker.reload()  # the worker re-reads the file itself

    signal.signal(signal.SIGHUP, _reload)
    grpc_host = parse_listen(settings.grpc_listen)[0]
    enroll_host = grpc_host if settings.insecure_dev else parse_listen(settings.enroll_listen)[0]
    ready = {
        "grpc": f"{grpc_host}:{grpc_port}",
        "enroll": f"{enroll_host}:{built.listeners.enroll_port}",
        "ca_fingerprint": built.ca.fingerprint(),
        "tls": not settings.insecure_dev,
        "http": f"http://{http_host}:{http_port}",
        "data_dir": str(settings.data_dir),
    }
    addr_file = settings.data_dir / "collector.addr.json"
    addr_file.with_suffix(".tmp").write_text(json.dumps(ready))
    addr_file.with_suffix(".tmp").replace(addr_file)  # whoever sees the file reads all of it
    if settings.insecure_dev:
        print(f"shoumi-collector: serving PLAINTEXT gRPC on {ready['grpc']}, HTTP on {ready['http']}", flush=True)
        log.warning("INSECURE: --insecure-dev serves agents in plaintext without client certificates; "
                    "for local development only, never on a network")
    else:
        print(f"shoumi-collector: agents (mutual TLS) on {ready['grpc']}, enrollment (TLS) on {ready['enroll']}, "
              f"HTTP on {ready['http']}; CA fingerprint {ready['ca_fingerprint']}", flush=True)
    try:
        server.run(sockets=[sock])  # returns once _stop was called
    finally:
        built.background.stop()
        built.grpc.stop(grace=5)
        built.ingest.close()
        if worker is not None:
            worker.stop()  # it runs until idle first
        elif settings.detection_enabled:
            built.detection.run_until_idle()  # what was stored is looked at before the process ends
        sign_tree_head(built.signer, built.store)  # the last batches are covered by a head too
        built.store.close()
        print("shoumi-collector: stopped", flush=True)
    return 0


def _cmd_ca_fingerprint(settings: CollectorSettings) -> int:
    from collector.pki import CertificateAuthority

    print(CertificateAuthority.load_or_create(settings.data_dir).fingerprint())
    return 0


def _listed_token(tx: Any, ident: str) -> str | None:
    """The hash of the one token whose listed id (the first 12 hex digits of its hash) is ``ident``."""
    if len(ident) != 12 or any(c not in "0123456789abcdef" for c in ident):
        return None
    found = [t.token_hash for t in tx.list_enroll_tokens(limit=1_000_000) if t.token_hash.startswith(ident)]
    return found[0] if len(found) == 1 else None


def _cmd_enroll_token(settings: CollectorSettings, args: argparse.Namespace) -> int:
    import time

    from collector.enrollment.service import EnrollmentError, EnrollmentService
    from collector.storage import open_store

    store = open_store(settings.store_location())
    try:
        service = EnrollmentService(token_ttl_ns=int(settings.enroll_token_ttl_hours * 3600e9))
        with store.transaction() as tx:  # the action and its audit row commit together
            if args.action == "revoke":
                listed = _listed_token(tx, args.token)  # the id `list` shows, or else the token's value
                done = (service.revoke_token_hash(tx=tx, token_hash=listed, actor=_actor()) if listed is not None
                        else service.revoke_token(tx=tx, token=args.token, actor=_actor()))
            elif args.action == "list":
                tokens = tx.list_enroll_tokens()
            else:
                ttl = None if args.hours is None else int(args.hours * 3600e9)
                token = service.create_token(tx=tx, actor=_actor(), ttl_ns=ttl, max_uses=args.uses,
                                             labels=args.label, name=args.name)
        if args.action == "list":
            from collector.enrollment.models import token_state
            from collector.web.timefmt import format_ns

            now = time.time_ns()
            for t in tokens:
                print(f"{t.token_hash[:12]}\t{token_state(t, now_ns=now)}\t{t.uses}/{t.max_uses}\t"
                      f"{format_ns(t.expires_at_ns)}\t{','.join(t.labels) or '-'}\t{t.name or '-'}")
            return 0
        if args.action == "revoke":
            if done:
                print("revoked", file=sys.stderr)
                return 0
            print("shoumi-collector: no unused, unrevoked token like that", file=sys.stderr)
            return 2
        print(token)
    except EnrollmentError as exc:
        print(f"shoumi-collector: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def _cmd_agent(settings: CollectorSettings, args: argparse.Namespace) -> int:
    import time

    from collector.fleet import service as fleet
    from collector.storage import open_store
    from collector.web.timefmt import format_ns

    store = open_store(settings.store_location())
    try:
        if args.action == "revoke":
            with store.transaction() as tx:
                done = fleet.revoke(tx=tx, agent_id=args.agent_id, actor=_actor(), now_ns=time.time_ns())
            if done:
                print(f"revoked {args.agent_id}", file=sys.stderr)
                return 0
            print(f"shoumi-collector: no unrevoked agent {args.agent_id!r}", file=sys.stderr)
            return 2
        if args.action == "labels":
            from collector.fleet.models import LabelError
            try:
                with store.transaction() as tx:
                    labels = fleet.set_labels(tx=tx, agent_id=args.agent_id, labels=args.labels, actor=_actor(),
                                              now_ns=time.time_ns())
            except LabelError as exc:
                print(f"shoumi-collector: {exc}", file=sys.stderr)
                return 2
            if labels is None:
                print(f"shoumi-collector: no agent {args.agent_id!r}", file=sys.stderr)
                return 2
            print(",".join(labels) or "-")
            return 0
        with store.read() as tx:
            agents = tx.list_agents()
        for a in agents:
            seen = format_ns(a.last_seen_ns) if a.last_seen_ns else "-"
            state = "revoked" if a.revoked_at_ns else a.liveness
            print(f"{a.agent_id}\t{a.hostname}\t{state}\t{seen}\t{','.join(a.labels) or '-'}")
        return 0
    finally:
        store.close()


def _cmd_verify(settings: CollectorSettings, args: argparse.Namespace) -> int:
    from collector.storage import open_store
    from collector.transparency import TREE_KEY_FILE, TreeKeyError, load_tree_key, tree_public_key
    from collector.verify import default_jobs, verify_store

    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        print("shoumi-collector: --jobs must be at least 1", file=sys.stderr)
        return 2
    if settings.database_url is None and not (settings.data_dir / "collector.db").exists():  # verify creates nothing
        print(f"shoumi-collector: no collector store in {settings.data_dir}", file=sys.stderr)
        return 2
    public_key = None
    try:
        if args.tree_public_key:
            public_key = bytes.fromhex(args.tree_public_key)
            if len(public_key) != 32:
                raise ValueError("--tree-public-key must be 32 bytes in hex")
        elif (settings.data_dir / TREE_KEY_FILE).exists():
            public_key = tree_public_key(load_tree_key(settings.data_dir))
    except TreeKeyError as exc:
        print(f"shoumi-collector: {exc}", file=sys.stderr)
        return 2
    store = open_store(settings.store_location())
    try:
        report = verify_store(store, tree_public_key=public_key, jobs=jobs, location=settings.store_location())
    finally:
        store.close()
    print(report.render())
    return 0 if report.ok else 1


def _cmd_rules_check(path: Path) -> int:
    from collector.detection.config import RulesError, load_rules, summarize

    try:
        rules = load_rules(path)
    except RulesError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    print(f"{path}: {summarize(rules)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoumi-collector", description="Shoumi collector")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", dest="data_dir", type=Path, help="where the collector keeps its state")
        p.add_argument("--database-url", dest="database_url", help="postgresql://... instead of SQLite")

    serve = sub.add_parser("serve", help="run the gRPC ingest server and the web app")
    store_args(serve)
    serve.add_argument("--grpc-listen", dest="grpc_listen", help="HOST:PORT for agents, mutual TLS (port 0: any)")
    serve.add_argument("--enroll-listen", dest="enroll_listen", help="HOST:PORT for enrollment, TLS (port 0: any)")
    serve.add_argument("--insecure-dev", action="store_true",
                       help="plaintext gRPC without client certificates: local development only")
    serve.add_argument("--http-listen", dest="http_listen", help="HOST:PORT for the UI and API (port 0: any)")
    serve.add_argument("--read-burst-threshold", type=int, help="alert on more reads than this...")
    serve.add_argument("--read-burst-window-minutes", type=float, help="...by one user in this many minutes")
    serve.add_argument("--rules", dest="rules_file", type=Path,
                       help="detection rules (TOML; see rules.toml.example); SIGHUP re-reads it")

    rules = sub.add_parser("rules", help="the detection rules file")
    rules_sub = rules.add_subparsers(dest="action", required=True)
    rules_sub.add_parser("check", help="exit 0 if FILE is valid, else 2 naming the line and key").add_argument(
        "file", type=Path)

    store_args(sub.add_parser("ca-fingerprint", help="print the SHA-256 fingerprint of the collector's CA"))

    token = sub.add_parser("enroll-token", help="enrollment tokens for agents")
    token_sub = token.add_subparsers(dest="action", required=True)
    token_create = token_sub.add_parser("create", help="print a new enrollment token (one use unless --uses)")
    store_args(token_create)
    token_create.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it (default 1)")
    token_create.add_argument("--label", action="append", default=[],
                              help="a label every agent enrolled with it receives (repeatable)")
    token_create.add_argument("--name", default="", help="what it is for (shown in the token list)")
    token_create.add_argument("--hours", type=float, help="hours until it expires (default: the collector's setting)")
    store_args(token_sub.add_parser("list", help="tokens with their uses, expiry and labels (never their values)"))
    token_revoke = token_sub.add_parser("revoke", help="revoke an enrollment token with uses left")
    store_args(token_revoke)
    token_revoke.add_argument("token", metavar="ID|TOKEN", help="the id `enroll-token list` shows, or the token itself")

    from collector.people.cli import add_people_parsers
    add_people_parsers(sub, store_args)  # user create|list|disable|enable|passwd, api-token create|list|revoke

    agent = sub.add_parser("agent", help="the agent fleet")
    agent_sub = agent.add_subparsers(dest="action", required=True)
    store_args(agent_sub.add_parser("list", help="agents, their liveness and when last heard from"))
    revoke = agent_sub.add_parser("revoke", help="refuse an agent's streams from now on")
    store_args(revoke)
    revoke.add_argument("agent_id")
    labels = agent_sub.add_parser("labels", help="replace an agent's labels (none: remove them all)")
    store_args(labels)
    labels.add_argument("agent_id")
    labels.add_argument("labels", nargs="*")

    verify = sub.add_parser("verify", help="re-check every signature, chain, event and tree head; exit 1 if tampered")
    store_args(verify)
    verify.add_argument("--tree-public-key", help="the tree-head public key (hex) the auditor holds")
    verify.add_argument("--jobs", type=int, help="processes that check agents in parallel (default: one per CPU)")

    from collector.retention.cli import add_legal_hold_parser, add_retention_parsers
    add_legal_hold_parser(sub, store_args)
    add_retention_parsers(sub, store_args)  # retention run|status, privacy export
    from collector.policy.cli import add_policy_parser
    add_policy_parser(sub, store_args)  # policy set|assign|list|show
    from collector.evidence.cli import add_case_parser
    add_case_parser(sub, store_args)  # case export CASE_ID --out BUNDLE.zip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the collector's command line."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from collector.detection.config import RulesError
    from collector.people.service import PeopleError
    from collector.pki import PkiError
    from collector.storage.base import StoreError

    if args.command == "rules":  # needs no data directory
        return _cmd_rules_check(args.file)
    try:
        settings = _settings(args)
        # the collector's state (CA keys, tree key, SQLite store) is for the collector alone
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(settings.data_dir, 0o700)
        if args.command == "serve":
            return _cmd_serve(settings)
        if args.command == "ca-fingerprint":
            return _cmd_ca_fingerprint(settings)
        if args.command == "enroll-token":
            return _cmd_enroll_token(settings, args)
        if args.command == "user":
            from collector.people.cli import run_user
            return run_user(settings, args, _actor())
        if args.command == "agent":
            return _cmd_agent(settings, args)
        if args.command == "verify":
            return _cmd_verify(settings, args)
        if args.command == "case":
            from collector.evidence.cli import run_case
            return run_case(settings, args, _actor())
        if args.command == "tree-head":
            from collector.evidence.cli import run_tree_head
            return run_tree_head(settings, args)
        if args.command == "policy":
            from collector.policy.cli import run_policy
            return run_policy(settings, args, _actor())
        if args.command == "legal-hold":
            from collector.retention.cli import run_legal_hold
            return run_legal_hold(settings, args, _actor())
        if args.command in ("retention", "privacy"):
            from collector.retention.cli import run_privacy, run_retention_cmd
            return (run_retention_cmd if args.command == "retention" else run_privacy)(settings, args, _actor())
        from collector.people.cli import run_api_token
        return run_api_token(settings, args, _actor())
    except RulesError as exc:
        print(exc.render(), file=sys.stderr)
    except ValidationError as exc:
        print(f"shoumi-collector: invalid setting: {exc}", file=sys.stderr)
    except (PeopleError, StoreError, PkiError, ValueError, OSError) as exc:
        print(f"shoumi-collector: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
