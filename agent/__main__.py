"""The agent's command line and composition root.

    shoumi-agent enroll --collector HOST:PORT --token TOKEN --state-dir DIR
    shoumi-agent run --state-dir DIR --config agent.toml
    shoumi-agent run --state-dir DIR --watch PATH [--watch PATH ...]   (sensitive_folders=[PATH ...])

A policy the collector pushed (and the agent applied) is kept in the state directory and preferred
at the next start over --config/--watch, which remain for agents never given one.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import platform
import pwd
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from agent.settings import AgentSettings, SettingsError

if TYPE_CHECKING:
    from agent.policy import SensitiveFolderPolicy
    from agent.policy_push import PolicyInForce

__all__ = ["main"]

log = logging.getLogger("shoumi.agent")
VERSION = "0.1.0"


def _enroll(args: argparse.Namespace) -> int:
    import grpc

    from shoumi.tls import TLS_NAME, normalize_fingerprint
    from shoumi.v1 import ingest_pb2, ingest_pb2_grpc

    from agent.identity import AgentState, IdentityError, load_or_create_key, pin_policy_key, public_key_bytes, save_state
    from agent.tls import TlsError, check_issued, fetch_pinned_ca, new_key_and_csr, save_identity

    state_dir = Path(args.state_dir)
    host, _, port_text = args.collector.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"--collector takes HOST:PORT, got {args.collector!r}")
    host = host.strip("[]")
    if args.insecure_dev:
        print("shoumi-agent: WARNING: --insecure-dev enrolls in plaintext without TLS: development only", file=sys.stderr)
        ca_pem, channel = b"", grpc.insecure_channel(args.collector)
    else:
        if not args.ca_fingerprint:
            raise ValueError("--ca-fingerprint is required (shoumi-collector ca-fingerprint prints it)")
        pin = normalize_fingerprint(args.ca_fingerprint)
        try:
            ca_pem = fetch_pinned_ca(host, int(port_text), pin, timeout=args.timeout)
        except TlsError as exc:
            print(f"shoumi-agent: enrollment refused: {exc}", file=sys.stderr)
            return 2
        channel = grpc.secure_channel(
            args.collector, grpc.ssl_channel_credentials(root_certificates=ca_pem),
            options=[("grpc.ssl_target_name_override", TLS_NAME)],
        )
    key = load_or_create_key(state_dir)
    tls_key_pem, csr_pem = (b"", b"") if args.insecure_dev else new_key_and_csr()
    hostname = socket.gethostname()
    with channel:
        try:
            reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
                ingest_pb2.EnrollRequest(
                    token=args.token,
                    public_key=public_key_bytes(key),
                    hostname=hostname,
                    os=f"{platform.system()} {platform.release()}",
                    agent_version=VERSION,
                    csr_pem=csr_pem,
                ),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            print(f"shoumi-agent: enrollment failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    target = args.collector
    if not args.insecure_dev:
        try:
            check_issued(bytes(reply.client_certificate_pem), ca_pem, reply.agent_id)
        except TlsError as exc:
            print(f"shoumi-agent: enrollment refused: {exc}", file=sys.stderr)
            return 2
        save_identity(state_dir, key_pem=tls_key_pem, cert_pem=bytes(reply.client_certificate_pem), ca_pem=ca_pem)
        target = f"{args.collector.rpartition(':')[0]}:{reply.ingest_port}"
    try:
        # pushed policies must verify under this key; without one only a local policy is applied
        pin_policy_key(state_dir, bytes(reply.policy_public_key))
    except IdentityError as exc:
        print(f"shoumi-agent: enrollment refused: {exc}", file=sys.stderr)
        return 2
    save_state(state_dir, AgentState(reply.agent_id, target, hostname, tls=not args.insecure_dev))
    print(reply.agent_id)
    return 0


def _session_user(override: str | None) -> tuple[str, int]:
    if override:
        try:
            return override, pwd.getpwnam(override).pw_uid
        except KeyError:
            return override, -1
    import psutil

    for session in psutil.users():
        try:
            return session.name, pwd.getpwnam(session.name).pw_uid
        except KeyError:
            continue
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return getpass.getuser(), uid


def _policy(settings: AgentSettings, *, may_wait: bool = False) -> "SensitiveFolderPolicy":
    """The policy from --config, with any --watch PATH added as a sensitive folder.

    ``may_wait``: an agent with a pinned collector policy key may start without one (it waits for
    the collector's)."""
    from agent.policy import SensitiveFolderPolicy, load_policy

    policy = load_policy(settings.config) if settings.config else SensitiveFolderPolicy()
    extra = tuple(str(p.resolve()) for p in settings.watch)
    if extra:
        mapping = policy.to_mapping()
        mapping["sensitive_folders"] = list(dict.fromkeys([*mapping["sensitive_folders"], *extra]))
        policy = SensitiveFolderPolicy.from_mapping(mapping)
    if not policy.sensitive_folders and not may_wait:
        raise ValueError("nothing to watch: give --config agent.toml or at least one --watch PATH")
    return policy


def _policy_in_force(settings: AgentSettings, policy_key: bytes | None
                     ) -> tuple["PolicyInForce", tuple[tuple[str, int, str], str] | None]:
    """The last good pushed policy if it still verifies, else the local one; and a stored one's refusal."""
    from agent.policy_push import PushedPolicyStore, local_policy

    pushed, reason, ident = PushedPolicyStore(settings.state_dir).load_in_force(policy_key)
    refusal = (ident, reason) if reason is not None else None
    if pushed is not None:
        if settings.config or settings.watch:
            log.warning("the collector's policy %s version %d is in force; --config/--watch are not used "
                        "(they apply to agents never given one)", pushed.name, pushed.version)
        return pushed, refusal
    return local_policy(_policy(settings, may_wait=policy_key is not None)), refusal


def _background_priority(nice: int) -> None:
    """Lowers this thread's priority before any other starts (Linux threads inherit it): the
    agent's work waits while the user's processes want the CPU, and catches up from its queues
    (the kernel's fanotify queue is unlimited). The held-exec answerer raises itself back to 0."""
    try:
        tid = threading.get_native_id()
        if nice > os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError):  # not Linux/Unix: the platform's own scheduler decides
        log.info("could not lower the agent's priority to nice %d", nice)


def _compact_allocator() -> None:
    """glibc's allocator, told to keep less: two arenas instead of eight per core (the agent's
    threads each grew their own), freed memory returned above 128 KiB, allocations from 256 KiB
    mapped on their own (the default threshold grows with use and keeps large buffers in the heap)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return
    for option, value in ((-8, 2), (-1, 128 * 1024), (-3, 256 * 1024)):  # M_ARENA_MAX, M_TRIM_, M_MMAP_THRESHOLD
        mallopt(ctypes.c_int(option), ctypes.c_int(value))


def _run(settings: AgentSettings) -> int:
    from agent.identity import load_or_create_key, load_policy_key, load_state, open_epoch
    from agent.recorder import Recorder
    from agent.runtime import AgentRuntime
    from agent.sources.watchdog_source import Attribution
    from agent.spool import Spool
    from agent.transport import Shipper
    from agent.stop_reason import take_stop_reason

    try:
        from agent.sources.fanotify import native_exec_holder

        native = native_exec_holder()
    except ImportError:  # not Linux: no held execs
        native = True
    # Before any thread starts: they all inherit it. Without the C exec answerer the Python one
    # waits for the GIL, which a thread niced further could hold while descheduled: nice 5 at most.
    _background_priority(settings.nice if native else min(settings.nice, 5))
    _compact_allocator()
    policy_key = load_policy_key(settings.state_dir)
    in_force, stored_refusal = _policy_in_force(settings, policy_key)  # a bad agent.toml is named first
    state = load_state(settings.state_dir)
    key = load_or_create_key(settings.state_dir)
    spool_path = settings.state_dir / "spool.db"
    epoch, new_epoch = open_epoch(settings.state_dir, spool_exists=spool_path.exists())
    spool = Spool(spool_path, agent_id=state.agent_id, epoch=epoch, cap_bytes=settings.spool_cap_bytes)
    if spool.epoch != epoch:
        raise ValueError(f"spool epoch {spool.epoch} does not match the state's epoch {epoch}; remove {spool_path}")
    targets = (settings.collector or state.collector).split(",")
    renewer = None
    if state.tls:
        from agent.tls import CertificateRenewer, channel_factory

        open_channel = channel_factory(settings.state_dir)
        renewer = CertificateRenewer(settings.state_dir, state.agent_id, targets)
    else:
        import grpc

        log.warning("INSECURE: this agent was enrolled with --insecure-dev and streams in plaintext")
        open_channel = grpc.insecure_channel
    shipper = Shipper(
        spool, key, targets,
        max_events=settings.batch_max_events,
        in_flight=settings.in_flight_batches, linger_s=settings.batch_linger_s, open_channel=open_channel,
    )
    recorder = Recorder(spool, capacity=settings.queue_capacity, on_stored=shipper.wake.set)
    user, uid = _session_user(settings.attributed_user)
    try:
        runtime = AgentRuntime(
            settings, in_force.policy, spool=spool, recorder=recorder, shipper=shipper,
            attribution=Attribution(user, uid), version=VERSION, epoch=epoch, new_epoch=new_epoch,
            in_force=in_force, policy_key=policy_key, stored_refusal=stored_refusal,
        )
    except BaseException:
        spool.close()
        raise
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.warning("signal %s: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    runtime.start()
    if renewer is not None:
        renewer.start()
    print(f"shoumi-agent: {state.agent_id} watching {', '.join(map(str, runtime.folders)) or 'nothing yet'} "
          f"(policy {in_force.name} v{in_force.version}) "
          f"({'fanotify' if runtime.use_fanotify else 'inotify'}), "
          f"sending to {settings.collector or state.collector}", flush=True)
    runtime.run_until(stopping)
    if renewer is not None:
        renewer.stop()
    drained = runtime.stop(reason=take_stop_reason(settings.state_dir))
    spool.close()
    print(f"shoumi-agent: stopped ({'all delivered' if drained else 'undelivered events stay spooled'})", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoumi-agent", description="Shoumi workstation agent")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    enroll = sub.add_parser("enroll", help="register this workstation with a collector")
    enroll.add_argument("--collector", required=True, help="HOST:PORT of the collector's enrollment listener")
    enroll.add_argument("--token", required=True, help="an enrollment token (shoumi-collector enroll-token create, or /fleet/tokens)")
    enroll.add_argument("--ca-fingerprint", help="SHA-256 of the collector's CA (shoumi-collector ca-fingerprint)")
    enroll.add_argument("--insecure-dev", action="store_true", help="plaintext, no certificates: development only")
    enroll.add_argument("--state-dir", required=True)
    enroll.add_argument("--timeout", type=float, default=15.0)
    run = sub.add_parser("run", help="watch sensitive folders and stream events")
    run.add_argument("--state-dir", required=True)
    run.add_argument("--config", help="agent.toml with the [policy] table")
    run.add_argument("--watch", action="append", default=[], help="a sensitive folder (repeatable)")
    run.add_argument("--capture", choices=["auto", "fanotify", "inotify"],
                     help="how reads and writes are seen (default auto: fanotify when root)")
    run.add_argument("--collector", help="HOST:PORT[,HOST:PORT...] tried in turn (default: the one enrolled with)")
    run.add_argument("--attributed-user", help="user name for events that carry no process")
    run.add_argument("--heartbeat-seconds", type=float)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the agent's command line."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from agent.identity import IdentityError
    from agent.tls import TlsError

    try:
        if args.command == "enroll":
            return _enroll(args)
        given: dict[str, Any] = {"state_dir": Path(args.state_dir)}
        if args.watch:
            given["watch"] = [Path(p) for p in args.watch]
        if args.config is not None:
            given["config"] = Path(args.config)
        for name in ("collector", "attributed_user", "heartbeat_seconds", "capture"):
            if getattr(args, name) is not None:
                given[name] = getattr(args, name)
        return _run(AgentSettings.load(**given))
    except SettingsError as exc:
        print(f"shoumi-agent: invalid setting: {exc}", file=sys.stderr)
    except (IdentityError, TlsError, ValueError, OSError) as exc:
        print(f"shoumi-agent: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
