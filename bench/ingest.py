"""Collector ingest capacity: stored events/s, Ack latency, CPU/RSS and concurrent agent streams.

Starts one real collector (`shoumi-collector serve`, as bench/harness.py starts it) on loopback with
mutual TLS and its default detection rules on, enrolls simulated agents through the real enrollment path
(a one-time token from `shoumi-collector enroll-token create`, the CA pinned by its fingerprint, a CSR
over the TLS enrollment listener), pre-builds and pre-signs each agent's chained batches (Ed25519, prev
hashes as the agent chains them; reads, writes and copies under /srv/sensitive/... with fanotify-like
attributes, and one user's burst of thousands of reads) and then streams them from grpc.aio client
processes, each agent on its own mutual-TLS channel and bidirectional stream with a window of
unacknowledged batches. It measures:

* stored events/s (acknowledged, i.e. committed, events over the timed window; checked against the
  collector's events table afterwards), p50/p99 from batch send to its durable Ack;
* collector CPU (% of one core) and RSS (psutil on the collector process), client CPU;
* how far detection keeps up (from chain_heads: events detected per second, events not yet looked at
  when the window ends, seconds until it caught up; always 0 for a collector that detects inline);
* the raw insert rate of the very same rows (read back from the collector's store) into a fresh store
  of the same schema, built by the collector's own open_store: SQLite executemany in 1,000-row
  transactions (WAL, synchronous=FULL, as the collector opens it; also through SQLAlchemy Core) or, with
  --backend postgres, COPY (psycopg 3 cursor.copy) in 1,000-row transactions, on fresh databases made
  and dropped on the server of --database-url / $SHOUMI_TEST_PG_DSN; ratio = events/s / raw insert/s;
* with --streams S, a second phase: M agents keep storing at --streams-rate while S more enrolled agents
  (tokens made in this process by the collector's EnrollmentService, 500 per transaction: the CLI costs
  about a second each) each open a stream, send agent.start, heartbeat every --heartbeat-s and otherwise
  hold the stream idle; a refused stream is retried with the shipper's backoff. Reports the streams held,
  refused attempts by gRPC status, whether the storing agents kept being acknowledged (>= 90 % of their
  offered rate stored, no gap of 5 s) and whether an agent that connects after the ramp is served.

With --profile PREFIX the collector is sampled by py-spy (`pip install py-spy`) during the timed window
(and the hold) and the functions where its time goes are printed (PREFIX.raw keeps the collapsed
stacks; `--summarize PREFIX.raw` prints them again).

    python bench/ingest.py [--agents 16] [--events-per-batch 250] [--seconds 20 | --batches K]
                           [--window 4] [--rate EVENTS_PER_S] [--backend sqlite|postgres]
                           [--database-url DSN] [--streams S --storing-agents M --hold-seconds 10]
                           [--profile /tmp/ingest] [--keep]

It ends with one JSON line: {"events_per_s", "raw_insert_per_s", "ratio", "p99_ack_ms", "streams",
"backend", ...}. Goals (issue 8): >= 50,000 events/s, ratio >= 0.5, p99 Ack < 500 ms, >= 2,000
concurrent streams (aim 10,000). The collector runs from the source tree this file is in; the machine's
load average is printed, since the figures of a shared machine compare only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
# The collector subprocess, the CLI and the client processes all use the tree this file is in.
_PATHS = [str(ROOT), str(ROOT / "proto")]
os.environ["PYTHONPATH"] = os.pathsep.join(_PATHS + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # thousands of channels: gRPC's INFO lines would bury the figures
for _p in reversed(_PATHS):
    if _p not in sys.path:
        sys.path.insert(0, _p)
sys.path.insert(0, str(Path(__file__).parent))

from harness import BIN, start_collector, stop_all  # noqa: E402

GOAL_EVENTS_PER_S = 50_000
GOAL_RATIO = 0.5
GOAL_P99_MS = 500.0
GOAL_STREAMS = 2_000
AIM_STREAMS = 10_000
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
METHOD = "/shoumi.v1.IngestService/StreamEvents"
RAW_CHUNK = 1_000


# --------------------------------------------------------------------------------------------
# What the client processes are given and give back (all picklable: they are spawned)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the collector listens and the CA fingerprint agents pin."""

    grpc: str
    enroll: str
    fingerprint: str


@dataclass(frozen=True)
class StoreJob:
    """Agents that stream pre-built batches as fast as their window (or the rate) lets them."""

    target: Target
    tokens: tuple[str, ...]
    first_index: int
    events_per_batch: int
    batches_per_agent: int
    window: int
    seconds: float | None
    batch_interval_s: float  # pacing per agent; 0: as fast as the window allows
    burst_reads: int
    late_tokens: tuple[str, ...] = ()  # agents that connect only once `ramped` is set (streams phase)
    late_batches: int = 5


@dataclass(frozen=True)
class IdleJob:
    """Agents that open a stream, send agent.start and hold the stream idle until told to stop."""

    target: Target
    tokens: tuple[str, ...]
    first_index: int
    connect_concurrency: int
    heartbeat_s: float
    enroll_concurrency: int
    attempts: int


@dataclass
class AgentOutcome:
    """One storing agent's figures; times are time.monotonic() (system-wide, so comparable)."""

    agent_id: str
    acks: list[tuple[float, int]] = field(default_factory=list)  # (ack time, events acknowledged)
    latencies: list[float] = field(default_factory=list)  # seconds from write to Ack
    sent_batches: int = 0
    ran_out: bool = False
    error: str | None = None  # gRPC status name that ended the stream early
    late: bool = False
    cut_at_stop: bool = False  # Acks still outstanding when the phase ended were not waited for


# --------------------------------------------------------------------------------------------
# Realistic events, pre-built and pre-signed
# --------------------------------------------------------------------------------------------
NAMES = ("zhang.wei", "wang.fang", "li.na", "liu.yang", "chen.jing", "yang.li", "zhao.lei", "huang.min",
         "zhou.jie", "wu.xia", "xu.tao", "sun.li", "ma.chao", "zhu.hong", "hu.bin", "guo.qiang")
DEPTS = ("finance", "hr", "legal", "rnd", "sales", "board")
EXTS = (".xlsx", ".docx", ".pdf", ".pptx", ".csv", ".dwg")
READERS = (("soffice.bin", "/usr/lib/libreoffice/program/soffice.bin"), ("evince", "/usr/bin/evince"),
           ("python3", "/usr/bin/python3.11"), ("cat", "/usr/bin/cat"))
COPIERS = (("cp", "/usr/bin/cp"), ("rsync", "/usr/bin/rsync"), ("nautilus", "/usr/bin/nautilus"))


def _user(index: int) -> tuple[str, int]:
    return f"{NAMES[index % len(NAMES)]}{index // len(NAMES) or ''}", 10_000 + index


class EventFactory:
    """Builds one agent's events: a workstation user's reads (80 %), writes (12 %) and copies (8 %),
    30 s apart (below the read-burst threshold), except one burst of `burst_reads` reads 20 ms apart
    (a `tar` of a project folder, from event 500 on) that the read-burst rule must catch. Event times end a minute before now: the
    agent is draining a backlog, which is when a collector sees its highest load."""

    def __init__(self, index: int, *, total: int, burst_reads: int, now_ns: int) -> None:
        from google.protobuf import struct_pb2

        self.rng = random.Random(index)
        self.user, self.uid = _user(index)
        self.id_prefix = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))[:24]
        dept = DEPTS[index % len(DEPTS)]
        self.files = [(f"/srv/sensitive/{dept}/project-{j % 17:02d}/{self.user}-{j:04d}{EXTS[j % len(EXTS)]}",
                       self.rng.randrange(2_000, 40_000_000), hashlib.sha256(f"{index}/{j}".encode()).hexdigest())
                      for j in range(400)]
        self.pids = [self.rng.randrange(1_000, 4_000_000) for _ in range(8)]
        self.burst_reads = burst_reads
        self.ids = os.environ.get("BENCH_EVENT_IDS", "uuid7")
        self.id_rng = random.Random(~index)  # its own: the events are the same whichever ids they get
        self.burst_start = min(500, total // 10, max(0, total - burst_reads)) if burst_reads else -1
        gap, burst_gap = 30_000_000_000, 20_000_000
        span = (total - max(burst_reads, 0)) * gap + max(burst_reads, 0) * burst_gap
        self.t = now_ns - 60_000_000_000 - span
        self.gap, self.burst_gap = gap, burst_gap
        self.read_attrs: list[Any] = []
        self.copies: list[tuple[str, str, Any]] = []
        for k in range(32):
            s = struct_pb2.Struct()
            s.update({"attribution": "fanotify", "open_ms": round(self.rng.uniform(0.2, 4_000), 3)})
            self.read_attrs.append(s)
        for k in range(32):
            src = self.files[k * 7 % len(self.files)][0]
            s = struct_pb2.Struct()
            s.update({"attribution": "fanotify", "open_ms": round(self.rng.uniform(1, 900), 3),
                      "source_paths": [src], "match": "exact" if k % 4 else "partial",
                      "match_share": 1.0 if k % 4 else round(self.rng.uniform(0.5, 0.99), 4),
                      "read_by_same_process": True, "read_source": src, "read_time": now_ns / 1e9 - 3600})
            self.copies.append((src, f"/home/{self.user}/Downloads/{Path(src).name}", s))

    def event_id(self, seq: int) -> str:
        """As the agent makes them (agent/core/events.py: version 7 UUIDs, time-ordered, here from the
        factory's clock), or, with --event-ids uuid4, the random ids agents made before December 2026, or,
        with sequential, the agent's prefix and the seq."""
        if self.ids == "uuid7":
            from agent.core.events import uuid7_text

            return uuid7_text(self.t, self.id_rng.getrandbits(62))
        if self.ids == "uuid4":
            return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))
        return f"{self.id_prefix}{seq:012x}"

    def fill(self, batch: Any, first_seq: int, count: int) -> None:
        """Appends `count` events, seq first_seq.. , to the batch message."""
        rnd, files, nfiles = self.rng.random, self.files, len(self.files)
        add, user, uid = batch.events.add, self.user, self.uid
        for seq in range(first_seq, first_seq + count):
            k = seq - 1
            pid = self.pids[(k // 50) % len(self.pids)]
            eid = self.event_id(seq)
            if 0 <= self.burst_start <= k < self.burst_start + self.burst_reads:
                self.t += self.burst_gap
                path = files[(k - self.burst_start) % nfiles][0]
                add(id=eid, kind="file.read", seq=seq, time_unix_ns=self.t, path=path, size=-1, user=user, uid=uid,
                    pid=pid, process="tar", exe="/usr/bin/tar").attributes.CopyFrom(self.read_attrs[k % 32])
                continue
            self.t += self.gap + int((rnd() - 0.5) * 10_000_000_000)
            roll = rnd()
            path, size, sha = files[int(rnd() * nfiles)]
            if roll < 0.80:
                process, exe = READERS[k % len(READERS)]
                add(id=eid, kind="file.read", seq=seq, time_unix_ns=self.t, path=path, size=-1, user=user, uid=uid,
                    pid=pid, process=process, exe=exe).attributes.CopyFrom(self.read_attrs[k % 32])
            elif roll < 0.92:
                add(id=eid, kind="file.write", seq=seq, time_unix_ns=self.t, path=path, size=size + k % 1999 - 999,
                    sha256=hashlib.sha256(eid.encode()).hexdigest(), user=user, uid=uid, pid=pid,
                    process=READERS[0][0], exe=READERS[0][1]).attributes.CopyFrom(self.read_attrs[k % 32])
            else:
                src, dest, attrs = self.copies[k % 32]
                process, exe = COPIERS[k % len(COPIERS)]
                add(id=eid, kind="file.copy", seq=seq, time_unix_ns=self.t, path=src, dest_path=dest, size=size,
                    sha256=sha, user=user, uid=uid, pid=pid, process=process, exe=exe).attributes.CopyFrom(attrs)


def iter_batches(agent_id: str, key: Any, index: int, *, batches: int, per_batch: int, burst_reads: int,
                 created_ns: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Yields (wire bytes, last seq, events) of one agent's chained, signed batches (epoch 1), as the
    agent's spool seals them. created_ns None: each batch is sealed when it is built."""
    from shoumi.batch import GENESIS_HASH, sign_batch
    from shoumi.v1 import events_pb2

    factory = EventFactory(index, total=batches * per_batch, burst_reads=burst_reads, now_ns=created_ns or time.time_ns())
    prev, seq = GENESIS_HASH, 1
    for _ in range(batches):
        b = events_pb2.EventBatch(agent_id=agent_id, epoch=1, first_seq=seq, prev_batch_hash=prev,
                                  created_unix_ns=created_ns or time.time_ns())
        factory.fill(b, seq, per_batch)
        prev = sign_batch(b, key)
        yield b.SerializeToString(), seq + per_batch - 1, per_batch
        seq += per_batch


def single_batch(agent_id: str, key: Any, *, seq: int, prev: bytes, kind: str, now_ns: int,
                 interval_s: float = 30.0) -> tuple[bytes, bytes]:
    """One signed batch of one agent.* event (which names the agent's heartbeat interval, as the agent's
    do: the collector calls an agent silent after three missed ones); returns (wire bytes, its hash)."""
    from shoumi.batch import sign_batch
    from shoumi.v1 import events_pb2

    b = events_pb2.EventBatch(agent_id=agent_id, epoch=1, first_seq=seq, prev_batch_hash=prev, created_unix_ns=now_ns)
    ev = b.events.add(id=str(uuid.uuid4()), kind=kind, seq=seq, time_unix_ns=now_ns, size=-1, uid=-1)
    ev.attributes.update({"interval_s": interval_s, "spool_depth": 0, "connected": True})
    digest = sign_batch(b, key)
    return b.SerializeToString(), digest


# --------------------------------------------------------------------------------------------
# Enrollment and streaming (inside the client processes)
# --------------------------------------------------------------------------------------------
@dataclass
class Enrolled:
    agent_id: str
    key: Any  # Ed25519PrivateKey
    target: str
    ca_pem: bytes
    tls_key_pem: bytes
    cert_pem: bytes


def _channel_options() -> list[tuple[str, Any]]:
    from shoumi.tls import TLS_NAME

    return [("grpc.ssl_target_name_override", TLS_NAME), ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", 8 * 1024 * 1024), ("grpc.max_receive_message_length", 8 * 1024 * 1024)]


async def enroll_one(token: str, target: Target, ca_pem: bytes | None, hostname: str) -> Enrolled:
    """The agent's enrollment (agent/__main__.py _enroll), in-process: pinned CA, token, CSR."""
    import grpc
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.identity import public_key_bytes
    from agent.tls import check_issued, fetch_pinned_ca, new_key_and_csr
    from shoumi.v1 import ingest_pb2, ingest_pb2_grpc

    host, _, port = target.enroll.rpartition(":")
    if ca_pem is None:  # each storing agent checks the pin itself, over its own TLS connection
        ca_pem = await asyncio.to_thread(fetch_pinned_ca, host, int(port), target.fingerprint)
    key = Ed25519PrivateKey.generate()
    tls_key_pem, csr_pem = new_key_and_csr()
    async with grpc.aio.secure_channel(target.enroll, grpc.ssl_channel_credentials(root_certificates=ca_pem),
                                       options=_channel_options()) as channel:
        reply = await ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            ingest_pb2.EnrollRequest(token=token, public_key=public_key_bytes(key), hostname=hostname,
                                     os="Linux 6.18", agent_version="0.1.0-bench", csr_pem=csr_pem), timeout=60)
    check_issued(bytes(reply.client_certificate_pem), ca_pem, reply.agent_id)
    return Enrolled(reply.agent_id, key, f"{host}:{reply.ingest_port}", ca_pem, tls_key_pem,
                    bytes(reply.client_certificate_pem))


async def enroll_all(tokens: Sequence[str], target: Target, first_index: int, *, pin_each: bool,
                     concurrency: int = 8) -> tuple[list[Enrolled | None], Counter[str]]:
    """Enrolls agents `concurrency` at a time; returns them (None where refused) and refusals."""
    from agent.tls import fetch_pinned_ca

    ca_pem: bytes | None = None
    if not pin_each:
        host, _, port = target.enroll.rpartition(":")
        ca_pem = await asyncio.to_thread(fetch_pinned_ca, host, int(port), target.fingerprint)
    sem = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()
    retries: Counter[str] = Counter()

    async def one(i: int, token: str) -> Enrolled | None:
        async with sem:
            for attempt in range(6):  # as an installer would retry: a full collector is not a refusal
                try:
                    return await enroll_one(token, target, ca_pem, f"bench-ws-{first_index + i:05d}")
                except Exception as exc:  # a refusal is a figure, not a crash
                    status = _status(exc)
                    if status in ("RESOURCE_EXHAUSTED", "UNAVAILABLE") and attempt < 5:
                        retries[status] += 1
                        await asyncio.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.5))
                        continue
                    failures[status] += 1
                    return None
        return None

    enrolled = list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens))))
    failures.update({f"retried:{k}": v for k, v in retries.items()})
    return enrolled, failures


def _credentials(agent: Enrolled) -> Any:
    import grpc

    return grpc.ssl_channel_credentials(root_certificates=agent.ca_pem, private_key=agent.tls_key_pem,
                                        certificate_chain=agent.cert_pem)


def _status(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return str(code().name)
        except Exception:  # noqa: BLE001
            pass
    return type(exc).__name__


async def stream_batches(agent: Enrolled, batches: Iterable[tuple[bytes, int, int]], *, window: int,
                         deadline: float | None, interval_s: float, start: float, late: bool = False,
                         stop: Any = None, drain_s: float = 30.0) -> AgentOutcome:
    """Streams the agent's batches over its own mutual-TLS stream, at most `window` unacknowledged."""
    import grpc

    from shoumi.v1 import events_pb2

    out = AgentOutcome(agent.agent_id, late=late)
    sent_at: dict[int, tuple[float, int]] = {}
    window_sem = asyncio.Semaphore(window)
    async with grpc.aio.secure_channel(agent.target, _credentials(agent), options=_channel_options()) as channel:
        call: Any = channel.stream_stream(METHOD, request_serializer=None,
                                          response_deserializer=events_pb2.Ack.FromString)()

        async def writer() -> None:
            for i, (raw, last_seq, n) in enumerate(batches):
                if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
                    break
                if interval_s:
                    await asyncio.sleep(max(0.0, start + i * interval_s - time.monotonic()))
                await window_sem.acquire()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                sent_at[last_seq] = (time.monotonic(), n)
                await call.write(raw)
                out.sent_batches += 1
            else:
                out.ran_out = deadline is not None or stop is not None
            await call.done_writing()

        async def reader() -> None:
            while True:
                ack: Any = await call.read()
                if ack is grpc.aio.EOF:
                    return
                t = time.monotonic()
                t0, n = sent_at.pop(ack.acked_seq, (t, 0))
                out.acks.append((t, n))
                out.latencies.append(t - t0)
                window_sem.release()

        write_task = asyncio.create_task(writer())
        stopped: list[float] = []

        async def watch_stop() -> None:  # told to stop: send nothing more, wait drain_s for the Acks due
            if stop is None:
                return
            await _wait_mp_event(stop)
            stopped.append(time.monotonic())
            write_task.cancel()  # it may be waiting for room in the window
            try:
                await call.done_writing()
            except Exception:  # noqa: BLE001 - already done
                pass
            await asyncio.sleep(drain_s)
            call.cancel()

        watch_task = asyncio.create_task(watch_stop())
        try:
            await asyncio.wait_for(reader(), timeout=None if deadline is None else max(1.0, deadline - time.monotonic()) + 60)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if stopped and not isinstance(exc, asyncio.TimeoutError):
                out.cut_at_stop = True  # Acks still due drain_s after the stop: not a refusal
            else:
                out.error = _status(exc)
        finally:
            watch_task.cancel()
            if not write_task.done():
                write_task.cancel()
            try:
                await write_task
            except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError, Exception):  # noqa: BLE001
                pass
    return out


async def _wait_mp_event(ev: Any, timeout: float | None = None) -> bool:
    limit = None if timeout is None else time.monotonic() + timeout
    while not ev.is_set():
        if limit is not None and time.monotonic() > limit:
            return False
        await asyncio.sleep(0.05)
    return True


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def store_client(job: StoreJob, results: Any, go: Any, ramped: Any, stop: Any) -> None:
    """A client process: enroll, pre-build, then stream when `go` is set; results go on the queue.

    With job.seconds None (the streams phase) batches are built as they are sent (the pace is low)
    and the agents stop when `stop` is set."""
    async def main() -> None:
        t0 = time.monotonic()
        agents, failures = await enroll_all(job.tokens + job.late_tokens, job.target, job.first_index, pin_each=True)
        enroll_s = time.monotonic() - t0
        if any(a is None for a in agents):
            results.put(("error", f"enrollment refused: {dict(failures)}"))
            return
        ready = [a for a in agents if a is not None]
        storing, late = ready[: len(job.tokens)], ready[len(job.tokens):]
        t1 = time.monotonic()
        created = time.time_ns() if job.seconds is not None else None
        built: list[Iterable[tuple[bytes, int, int]]] = []
        for i, a in enumerate(storing):
            gen = iter_batches(a.agent_id, a.key, job.first_index + i, batches=job.batches_per_agent,
                               per_batch=job.events_per_batch, created_ns=created,
                               burst_reads=job.burst_reads if job.first_index + i == 0 else 0)
            built.append(list(gen) if job.seconds is not None else gen)
        late_built = [iter_batches(a.agent_id, a.key, job.first_index + len(storing) + i, batches=job.late_batches,
                                   per_batch=job.events_per_batch, burst_reads=0) for i, a in enumerate(late)]  # sealed when sent
        prebuilt = sum(len(b) for b in built if isinstance(b, list)) * job.events_per_batch
        results.put(("ready", {"enroll_s": enroll_s, "agents": len(ready), "build_s": time.monotonic() - t1,
                               "events": prebuilt}))
        await _wait_mp_event(go)
        start = time.monotonic()
        cpu0 = _cpu_s()
        deadline = None if job.seconds is None else start + job.seconds
        until = None if job.seconds is not None else stop
        tasks = [asyncio.create_task(stream_batches(a, b, window=job.window, deadline=deadline, stop=until,
                                                    interval_s=job.batch_interval_s, start=start))
                 for a, b in zip(storing, built)]
        late_outcomes: list[AgentOutcome] = []
        if late:
            await _wait_mp_event(ramped)
            late_outcomes = list(await asyncio.gather(*(
                stream_batches(a, b, window=job.window, deadline=time.monotonic() + 60, interval_s=0.0,
                               start=time.monotonic(), late=True)
                for a, b in zip(late, late_built))))
        outcomes = list(await asyncio.gather(*tasks))
        results.put(("done", {"outcomes": outcomes + late_outcomes, "cpu_s": _cpu_s() - cpu0,
                              "wall_s": time.monotonic() - start, "rss": _rss()}))

    _run_client(main, results)


def idle_client(job: IdleJob, results: Any, go: Any, ramped: Any, stop: Any) -> None:
    """A client process of the streams phase: enroll, then hold one idle stream per agent."""
    async def main() -> None:
        import grpc

        from shoumi.batch import GENESIS_HASH
        from shoumi.v1 import events_pb2

        t0 = time.monotonic()
        enrolled, failures = await enroll_all(job.tokens, job.target, job.first_index, pin_each=False,
                                              concurrency=job.enroll_concurrency)
        agents = [a for a in enrolled if a is not None]
        results.put(("ready", {"enroll_s": time.monotonic() - t0, "agents": len(agents),
                               "enroll_refused": dict(failures), "build_s": 0.0, "events": len(agents)}))
        await _wait_mp_event(go)
        stop_flag = asyncio.Event()

        async def watch_stop() -> None:
            await _wait_mp_event(stop)
            stop_flag.set()

        asyncio.create_task(watch_stop())
        sem = asyncio.Semaphore(job.connect_concurrency)
        status: Counter[str] = Counter()
        held_at: list[float] = []
        dropped: Counter[str] = Counter()
        heartbeats = Counter[str]()
        hb_latency: list[float] = []

        async def hold(agent: Enrolled) -> None:
            """Opens the agent's stream; a refused one is retried as the shipper does (backoff 0.25 s
            doubling, jittered), at most job.attempts times in all."""
            for attempt in range(job.attempts):
                try:
                    await hold_stream(agent)
                except Exception as exc:  # noqa: BLE001 - counted, never fatal
                    key = f"client:{type(exc).__name__}"
                    (dropped if agent.agent_id in acked_ids else status)[key] += 1
                    details.setdefault(key, traceback.format_exc(limit=4)[-400:])
                if agent.agent_id in acked_ids or stop_flag.is_set():
                    return
                await asyncio.sleep(0.25 * 2**attempt * random.uniform(0.5, 1.5))
            gave_up.append(agent.agent_id)

        acked_ids: set[str] = set()
        sealed: dict[str, tuple[bytes, bytes]] = {}
        gave_up: list[str] = []
        details: dict[str, str] = {}

        async def hold_stream(agent: Enrolled) -> None:
            async with grpc.aio.secure_channel(agent.target, _credentials(agent), options=_channel_options()) as channel:
                call: Any = channel.stream_stream(METHOD, request_serializer=None,
                                                  response_deserializer=events_pb2.Ack.FromString)()
                async with sem:
                    try:
                        if agent.agent_id not in sealed:  # sealed once: a retry resends the very same batch
                            sealed[agent.agent_id] = single_batch(agent.agent_id, agent.key, seq=1, prev=GENESIS_HASH,
                                                                  kind="agent.start", now_ns=time.time_ns(),
                                                                  interval_s=job.heartbeat_s)
                        raw, prev = sealed[agent.agent_id]
                        await call.write(raw)
                        ack = await asyncio.wait_for(call.read(), timeout=60)
                        if ack is grpc.aio.EOF:
                            status["EOF"] += 1
                            return
                        status["OK"] += 1
                        acked_ids.add(agent.agent_id)
                        held_at.append(time.monotonic())
                    except (grpc.aio.AioRpcError, asyncio.TimeoutError) as exc:
                        status[_status(exc)] += 1
                        if isinstance(exc, grpc.aio.AioRpcError):
                            details.setdefault(_status(exc), str(exc.details())[:160])
                        call.cancel()
                        return
                    except asyncio.InvalidStateError:  # the RPC ended before our write: its status says why
                        code = await call.code()
                        status[code.name] += 1
                        details.setdefault(code.name, str(await call.details())[:160])
                        return
                seq = 2
                while not stop_flag.is_set():
                    reader = asyncio.ensure_future(call.read())
                    stopper = asyncio.ensure_future(stop_flag.wait())
                    done, _ = await asyncio.wait({reader, stopper}, timeout=job.heartbeat_s * random.uniform(0.8, 1.2),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if reader in done:  # the collector ended the stream (or sent something unasked)
                        try:
                            reader.result()
                            dropped["EOF"] += 1
                        except grpc.aio.AioRpcError as exc:
                            dropped[_status(exc)] += 1
                        return
                    if not done:  # heartbeat time
                        raw, prev = single_batch(agent.agent_id, agent.key, seq=seq, prev=prev, kind="agent.heartbeat",
                                                 now_ns=time.time_ns(), interval_s=job.heartbeat_s)
                        seq += 1
                        try:
                            t_hb = time.monotonic()
                            await call.write(raw)
                            ack = await asyncio.wait_for(reader, timeout=30)
                            heartbeats["acked" if ack is not grpc.aio.EOF else "EOF"] += 1
                            hb_latency.append(time.monotonic() - t_hb)
                            continue
                        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as exc:
                            # a heartbeat unacknowledged for 30 s: this client gives the stream up
                            dropped["heartbeat_unacked_30s" if isinstance(exc, asyncio.TimeoutError) else _status(exc)] += 1
                            return
                    reader.cancel()
                call.cancel()

        cpu0 = _cpu_s()
        start = time.monotonic()
        tasks = [asyncio.create_task(hold(a)) for a in agents]
        try:
            await asyncio.wait_for(_ramp_done(acked_ids, gave_up, len(agents)), timeout=900)
        except asyncio.TimeoutError:
            status["client:ramp_timeout"] += len(agents) - len(acked_ids) - len(gave_up)
        results.put(("ramped", {"ramp_s": time.monotonic() - start, "status": dict(status), "held": len(held_at),
                                "gave_up": len(gave_up), "details": details}))
        await stop_flag.wait()
        held_end = status["OK"] - sum(dropped.values())
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
        results.put(("done", {"status": dict(status), "held_at_stop": held_end, "dropped": dict(dropped),
                              "heartbeats": dict(heartbeats), "hb_latency": hb_latency, "cpu_s": _cpu_s() - cpu0,
                              "rss": _rss(),
                              "wall_s": time.monotonic() - start}))

    _run_client(main, results)


async def _ramp_done(acked: set[str], gave_up: list[str], total: int) -> None:
    while len(acked) + len(gave_up) < total:
        await asyncio.sleep(0.05)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _run_client(main: Any, results: Any) -> None:
    try:
        asyncio.run(main())
    except BaseException as exc:  # the parent must hear of it rather than wait
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


# --------------------------------------------------------------------------------------------
# The parent: collector, tokens, phases, measurements
# --------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Samples the collector's CPU time and RSS every 0.25 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float, int, int]] = []  # (t, cpu s, rss, threads)
        self.worker_cpu: list[tuple[float, float]] = []  # (t, cpu s of the collector's child processes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with self.proc.oneshot():
                    c = self.proc.cpu_times()
                    sample = (time.monotonic(), c.user + c.system, self.proc.memory_info().rss, self.proc.num_threads())
                self.samples.append(sample)
                workers = 0.0
                for child in self.proc.children(recursive=True):  # the detection worker
                    try:
                        w = child.cpu_times()
                        workers += w.user + w.system
                    except Exception:  # noqa: BLE001 - it may have ended
                        pass
                self.worker_cpu.append((sample[0], workers))
            except Exception:  # noqa: BLE001 - the collector may be gone
                return
            self._halt.wait(0.25)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)

    def threads(self) -> dict[int, tuple[str, float]]:
        """The collector's threads now: native id -> (name, CPU seconds), from /proc (Linux)."""
        out: dict[int, tuple[str, float]] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def cpu_s(self, t0: float, t1: float) -> tuple[float, float]:
        """CPU seconds of the collector process and of its child processes (the detection worker) between t0
        and t1 (the samples nearest inside), robust to a loaded machine, unlike wall-clock rates."""
        def spent(samples: Sequence[tuple[Any, ...]]) -> float:
            inside = [s for s in samples if t0 <= s[0] <= t1]
            return inside[-1][1] - inside[0][1] if len(inside) > 1 else float("nan")

        return spent(self.samples), spent(self.worker_cpu)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {"cpu_pct": float("nan"), "worker_cpu_pct": float("nan"), "rss_mb": float("nan"), "threads": 0}
        a, b = inside[0], inside[-1]
        kids = [s for s in self.worker_cpu if t0 <= s[0] <= t1]
        worker = round(100 * (kids[-1][1] - kids[0][1]) / (kids[-1][0] - kids[0][0]), 1) if len(kids) > 1 else 0.0
        return {"cpu_pct": round(100 * (b[1] - a[1]) / (b[0] - a[0]), 1), "worker_cpu_pct": worker,
                "rss_mb": round(max(s[2] for s in inside) / 2**20, 1), "threads": max(s[3] for s in inside)}


def cli_tokens(data_dir: Path, n: int) -> list[str]:
    """n one-time tokens from `shoumi-collector enroll-token create` (4 at a time)."""
    def one(_: int) -> str:
        for attempt in range(3):
            done = subprocess.run([str(BIN / "shoumi-collector"), "enroll-token", "create", "--data-dir", str(data_dir)],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
            print(f"enroll-token create failed (attempt {attempt + 1}): {done.stderr.strip()[-300:]}", file=sys.stderr)
        raise SystemExit("cannot create enrollment tokens")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def inprocess_tokens(location: str, n: int) -> list[str]:
    """n tokens made by the collector's EnrollmentService.create_token (what the CLI runs), in this
    process; with the unit-of-work store, 500 tokens (and their audit rows) per transaction."""
    import importlib
    import inspect

    from collector.storage import open_store

    module = importlib.import_module("collector.enrollment")
    if not hasattr(module, "EnrollmentService"):
        module = importlib.import_module("collector.enrollment.service")
    ttl = 24 * 3600 * 10**9
    store: Any = open_store(location)
    try:
        if "tx" not in inspect.signature(module.EnrollmentService.create_token).parameters:
            service = module.EnrollmentService(store, token_ttl_ns=ttl)  # one store call per transaction
            return [service.create_token(actor="bench:ingest") for _ in range(n)]
        service = module.EnrollmentService(token_ttl_ns=ttl)
        out: list[str] = []
        while len(out) < n:
            with store.transaction() as tx:
                out += [service.create_token(tx=tx, actor="bench:ingest") for _ in range(min(500, n - len(out)))]
        return out
    finally:
        store.close()


class DetectionProbe(threading.Thread):
    """Samples, from the collector's chain_heads, how many events are stored and how far detection has
    run over them (sum of last_seq and detected_seq; one epoch per agent here). A collector that runs
    detection inside ingest is never behind."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            while not self._halt.is_set():
                try:
                    with engine.connect() as conn:
                        row = conn.exec_driver_sql(
                            "SELECT COALESCE(SUM(last_seq), 0), COALESCE(SUM(CASE WHEN detected_epoch = epoch "
                            "THEN detected_seq ELSE 0 END), 0) FROM chain_heads").one()
                    self.samples.append((time.monotonic(), int(row[0]), int(row[1])))
                except Exception:  # noqa: BLE001 - e.g. no detected_seq column: no figure
                    pass
                self._halt.wait(0.5)
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def at(self, t: float) -> tuple[int, int] | None:
        before = [s for s in self.samples if s[0] <= t]
        return (before[-1][1], before[-1][2]) if before else None

    def wait_caught_up(self, after: float, timeout: float) -> float | None:
        """Seconds after `after` until detection had run over everything stored, or None."""
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            done = [s for s in self.samples if s[0] >= after and s[2] >= s[1] > 0]
            if done:
                return round(done[0][0] - after, 1)
            time.sleep(0.5)
        return None


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _collect(results: Any, kind: str, n: int, timeout: float, procs: Sequence[Any]) -> list[dict[str, Any]]:
    """Waits for n messages of `kind` from the client processes."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        try:
            what, payload = results.get(timeout=1)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise SystemExit(f"client processes did not report {kind!r} within {timeout:.0f} s")
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a client process died; see its traceback above")
            continue
        if what == "error":
            raise SystemExit(f"client process failed: {payload}")
        if what != kind:
            raise SystemExit(f"unexpected message {what!r} from a client process while waiting for {kind!r}")
        got.append(payload)
    return got


def _split(items: Sequence[str], parts: int) -> list[tuple[int, tuple[str, ...]]]:
    size = math.ceil(len(items) / parts) if items else 0
    return [(i * size, tuple(items[i * size:(i + 1) * size])) for i in range(parts) if items[i * size:(i + 1) * size]]


class PyspyRecorder:
    """py-spy record --format raw on the collector for a given time."""

    def __init__(self, prefix: str | None, top: int = 22) -> None:
        self.prefix = prefix
        self.top = top
        self.proc: subprocess.Popen[bytes] | None = None
        self.raw = Path(f"{prefix}.raw") if prefix else None

    def start(self, pid: int, seconds: float) -> None:
        if not self.prefix:
            return
        exe = shutil.which("py-spy") or str(BIN / "py-spy")
        if not Path(exe).exists():
            print("py-spy is not installed (.venv/bin/pip install py-spy): no profile", file=sys.stderr)
            self.prefix = None
            return
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                                      "--rate", "100", "--format", "raw", "--output", str(self.raw), "--nonblocking",
                                      *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []),
                                      *(["--threads"] if os.environ.get("BENCH_PYSPY_THREADS") else []),
                                      *(["--subprocesses"] if os.environ.get("BENCH_PYSPY_WORKER") else [])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> list[str]:
        if self.proc is None or self.raw is None:
            return []
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
        if not self.raw.exists():
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            return [f"py-spy wrote nothing: {err.strip()[-300:]}"]
        return summarize_profile(self.raw, top=self.top)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"; line numbers are dropped
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/collector/", "/proto/shoumi/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize_profile(raw: Path, top: int = 22) -> list[str]:
    """Inclusive and self shares of samples per function, from py-spy's collapsed stacks."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and "(" in f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return ["py-spy: no samples"]
    lines = [f"py-spy: {total} samples of busy collector threads (100 Hz)", "  inclusive (time under the function):"]
    wrappers = ("(threading.py)", "(concurrent/futures/thread.py)", "(grpc/_server.py)")
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in
              [(n, c) for n, c in inclusive.most_common() if not n.endswith(wrappers)][:top]]
    lines.append("  self (time in the function itself):")
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(12)]
    return lines


def db_url(backend: str, data_dir: Path, pg_url: str | None) -> str:
    return pg_url if backend == "postgres" and pg_url else f"sqlite:///{data_dir / 'collector.db'}"


def read_back(url: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], int, dict[str, int]]:
    """The rows the collector stored (without row_id), the events count and alerts per rule."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            table = sa.Table("events", sa.MetaData(), autoload_with=conn)
            columns = [c.name for c in table.columns if c.name != "row_id"]
            count = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            rows = [tuple(r) for r in conn.execute(
                sa.select(*[table.c[c] for c in columns]).order_by(table.c.row_id).limit(limit)).all()]
            alerts = sa.Table("alerts", sa.MetaData(), autoload_with=conn)
            per_rule = {str(r): int(n) for r, n in conn.execute(
                sa.select(alerts.c.rule, sa.func.count()).group_by(alerts.c.rule)).all()}
    finally:
        engine.dispose()
    return columns, rows, count, per_rule


def count_events(url: str) -> int:
    """Rows in the collector's events table now."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one())
    finally:
        engine.dispose()


def _events_table() -> Any:
    """The collector's own SQLAlchemy definition of the events table (wherever the module lives now)."""
    import importlib

    for name in ("collector.storage.sql.schema", "collector.storage.sql"):
        try:
            return importlib.import_module(name).events
        except (ImportError, AttributeError):
            continue
    raise SystemExit("cannot find the collector's events table definition")


def raw_insert_sqlite(directory: Path, columns: list[str], rows: list[tuple[Any, ...]]) -> dict[str, float]:
    """Rows/s into fresh stores built by the collector's open_store (its schema and indexes, WAL,
    synchronous=FULL, BEGIN IMMEDIATE), 1,000 rows per transaction: "dbapi" is sqlite3 executemany of
    the INSERT compiled from the collector's events table, "sqlalchemy" the same through SQLAlchemy
    Core (conn.execute(events.insert(), rows)), which adds its per-row parameter processing."""
    from collector.storage import open_store

    table = _events_table()
    rates: dict[str, float] = {}
    for how in ("dbapi", "sqlalchemy"):
        store = open_store(directory / how)
        engine = store.engine
        sql = str(table.insert().compile(dialect=engine.dialect, column_keys=columns))
        dicts = [dict(zip(columns, r)) for r in rows] if how == "sqlalchemy" else []
        t0 = time.perf_counter()
        for i in range(0, len(rows), RAW_CHUNK):
            with engine.begin() as conn:
                if how == "dbapi":
                    cur = conn.connection.cursor()
                    cur.executemany(sql, rows[i:i + RAW_CHUNK])
                    cur.close()
                else:
                    conn.execute(table.insert(), dicts[i:i + RAW_CHUNK])
        rates[how] = len(rows) / (time.perf_counter() - t0)
        with engine.connect() as conn:
            mode = (conn.exec_driver_sql("PRAGMA journal_mode").scalar(), conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                    conn.exec_driver_sql("SELECT count(*) FROM events").scalar())
        store.close()
        if mode != ("wal", 2, len(rows)):
            print(f"warning: raw store ({how}): journal_mode={mode[0]} synchronous={mode[1]} rows={mode[2]}, "
                  "expected wal / 2 (FULL) / all", file=sys.stderr)
    return rates


def raw_insert_postgres(url: str, columns: list[str], rows: list[tuple[Any, ...]]) -> dict[str, float]:
    """Rows/s with COPY (psycopg 3 cursor.copy), 1,000 rows per transaction, into a fresh store's schema."""
    import psycopg

    from collector.storage import open_store

    open_store(url).close()  # the collector builds its schema
    with psycopg.connect(url) as conn:
        cols = ", ".join(f'"{c}"' for c in columns)
        t0 = time.perf_counter()
        for i in range(0, len(rows), RAW_CHUNK):
            with conn.cursor() as cur:
                with cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
                    for row in rows[i:i + RAW_CHUNK]:
                        copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - t0
    return {"copy": len(rows) / elapsed}


class PgDatabases:
    """Fresh databases on the PostgreSQL server of the DSN, dropped at the end."""

    def __init__(self, dsn: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self.dsn = dsn
        self.names: list[str] = []
        self._admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        self._params = conninfo_to_dict(dsn)
        self._make = make_conninfo

    def create(self, label: str) -> str:
        name = f"shoumi_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        params = dict(self._params, dbname=name)
        host, port, user = params.get("host", "127.0.0.1"), params.get("port", "5432"), params.get("user", "postgres")
        password = f":{params['password']}" if params.get("password") else ""
        return f"postgresql://{user}{password}@{host}:{port}/{name}"

    def drop_all(self) -> None:
        for name in self.names:
            try:
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                print(f"could not drop database {name}: {exc}", file=sys.stderr)
        self._admin.close()


def _stop_collector(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a clean stop signs a last tree head), then SIGKILL if it does not stop in 20 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        stop_all(proc)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _detecting() -> bool:
    """Whether the collector runs detection (SHOUMI_COLLECTOR_DETECTION_ENABLED=false turns it off)."""
    return os.environ.get("SHOUMI_COLLECTOR_DETECTION_ENABLED", "true").strip().lower() not in ("false", "0", "no", "off")


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_store_phase(ctx: Any, target: Target, tokens: list[str], args: argparse.Namespace, procs_n: int,
                    sampler: Sampler, collector_pid: int, profile: PyspyRecorder | None,
                    probe: DetectionProbe) -> dict[str, Any]:
    """The throughput phase: all agents store as fast as their windows allow; returns its figures."""
    B = args.events_per_batch
    if args.batches:
        per_agent, seconds = args.batches, None
    else:
        # enough batches for --max-rate events/s (at most 2,500 batches/s) for the whole window
        batch_rate = min(args.max_rate / B, 2_500.0)
        per_agent, seconds = max(4, math.ceil(batch_rate * args.seconds / len(tokens))), args.seconds
    interval = 0.0 if not args.rate else B * len(tokens) / args.rate
    results, go, ramped, stop = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Event()
    jobs = [StoreJob(target, part, first, B, per_agent, args.window, seconds, interval, args.burst_reads)
            for first, part in _split(tokens, procs_n)]
    procs = [ctx.Process(target=store_client, args=(job, results, go, ramped, stop), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    try:
        ready = _collect(results, "ready", len(procs), 600, procs)
        enroll_s = max(r["enroll_s"] for r in ready)
        print(f"enrolled {len(tokens)} storing agents (CLI tokens, pinned CA, CSR) in {enroll_s:.1f} s; "
              f"pre-built and signed {sum(r['events'] for r in ready):,} events in {per_agent} batches of {B} per agent "
              f"in {max(r['build_s'] for r in ready):.1f} s ({len(procs)} client processes)")
        start = time.monotonic()
        go.set()
        warm = min(2.0, (seconds or 0) * 0.1)
        if profile is not None and seconds:
            threading.Timer(warm, profile.start, args=(collector_pid, seconds - warm)).start()
        threads_at: list[tuple[float, dict[int, tuple[str, float]]]] = []
        timer = threading.Timer(warm, lambda: threads_at.append((time.monotonic(), sampler.threads())))
        timer.start()
        done = _collect(results, "done", len(procs), (seconds or 600) + 180, procs)
        timer.cancel()
        threads_at.append((time.monotonic(), sampler.threads()))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    outcomes: list[AgentOutcome] = [o for d in done for o in d["outcomes"]]
    end = start + seconds if seconds else max((t for o in outcomes for t, _ in o.acks), default=start)
    t0 = start + warm if seconds else start
    acked_in = sum(n for o in outcomes for t, n in o.acks if t0 <= t <= end)
    acked_all = sum(n for o in outcomes for _, n in o.acks)
    lat = [x for o in outcomes for x in o.latencies]
    client_cpu = sum(d["cpu_s"] for d in done) / max(d["wall_s"] for d in done) * 100
    window = sampler.window(t0, end)
    errors = Counter(o.error for o in outcomes if o.error)
    det0, det1 = probe.at(t0), probe.at(end)
    detected_per_s = lag_end = None
    if det0 and det1:
        detected_per_s = round((det1[1] - det0[1]) / (end - t0))
        lag_end = det1[0] - det1[1]
    caught_up = probe.wait_caught_up(end, args.detection_wait) if det1 and _detecting() else None
    lags = [s[1] - s[2] for s in probe.samples if t0 <= s[0] <= end]
    # CPU per 1,000 events: serve over the window's stored events; the worker from the window's start until
    # it caught up, over the events it ran over in that span (its lag at the start is worked off in it too)
    serve_s, _ = sampler.cpu_s(t0, end)
    serve_ms = round(1e6 * serve_s / acked_in, 2) if acked_in else None
    worker_ms = None
    if det0 and _detecting():
        t_done = end + (caught_up if caught_up is not None else args.detection_wait)
        det_done = probe.at(t_done)
        _, worker_s = sampler.cpu_s(t0, t_done + 0.3)
        detected = (det_done[1] - det0[1]) if det_done else 0
        worker_ms = round(1e6 * worker_s / detected, 2) if detected > 0 and worker_s == worker_s else None
    thread_pct: dict[str, float] = {}
    if len(threads_at) == 2:  # where the collector's CPU went, by thread (grpc's own threads are named)
        (ta, a), (tb, b) = threads_at
        for tid, (name, cpu) in b.items():
            label = "main" if tid == collector_pid else f"{name}[{tid}]"
            thread_pct[label] = thread_pct.get(label, 0.0) + 100 * (cpu - a.get(tid, (name, 0.0))[1]) / (tb - ta)
        thread_pct = {k: round(v, 1) for k, v in sorted(thread_pct.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    return {
        "collector_threads_cpu_pct": thread_pct,
        "detected_per_s": detected_per_s, "detection_lag_events_at_end": lag_end, "detection_caught_up_s": caught_up,
        "serve_cpu_ms_per_1k": serve_ms, "worker_cpu_ms_per_1k": worker_ms,
        "detection_lag_max_events": max(lags, default=None),
        "detection_lag_mean_events": round(sum(lags) / len(lags)) if lags else None,
        "events_per_s": round(acked_in / (end - t0)) if end > t0 else 0, "acked": acked_all,
        "p50_ack_ms": round(pct(lat, 0.50) * 1000, 1), "p99_ack_ms": round(pct(lat, 0.99) * 1000, 1),
        "max_ack_ms": round(max(lat, default=float("nan")) * 1000, 1), "batches_acked": len(lat),
        "collector_cpu_pct": window["cpu_pct"], "collector_rss_mb": window["rss_mb"],
        "detection_worker_cpu_pct": window["worker_cpu_pct"], "collector_threads": window["threads"], "client_cpu_pct": round(client_cpu, 1),
        "client_procs": len(procs), "streams_held": sum(1 for o in outcomes if o.acks and not o.error),
        "stream_errors": dict(errors), "ran_out": sum(o.ran_out for o in outcomes),
        "in_flight_max_events": len(tokens) * args.window * B, "window_s": round(end - t0, 1),
        "enroll_s": round(enroll_s, 2),
    }


def run_streams_phase(ctx: Any, target: Target, store_tokens: list[str], late_tokens: list[str], idle_tokens: list[str],
                      args: argparse.Namespace, sampler: Sampler, profile: PyspyRecorder | None = None,
                      collector_pid: int = 0) -> dict[str, Any]:
    """M agents keep storing (paced) while S idle agents open and hold their streams."""
    B = args.events_per_batch
    results, go_store, go, ramped, stop = ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    rate_batches = args.streams_rate / B  # batches/s over all storing agents, built as they are sent
    interval = len(store_tokens) / rate_batches
    per_agent = math.ceil(rate_batches / max(1, len(store_tokens)) * 1_800)  # enough for 30 minutes
    store_job = StoreJob(target, tuple(store_tokens), 100_000, B, per_agent, args.window, None, interval, 0,
                         late_tokens=tuple(late_tokens))
    idle_jobs = [IdleJob(target, part, 200_000 + first, args.connect_concurrency, args.heartbeat_s, args.enroll_concurrency,
                         args.attempts)
                 for first, part in _split(idle_tokens, args.idle_procs or max(2, math.ceil(len(idle_tokens) / 2500)))]
    store_results = ctx.Queue()
    store_proc = ctx.Process(target=store_client, args=(store_job, store_results, go_store, ramped, stop), daemon=True)
    idle_procs = [ctx.Process(target=idle_client, args=(job, results, go, ramped, stop), daemon=True) for job in idle_jobs]
    all_procs = [store_proc, *idle_procs]
    for p in all_procs:
        p.start()
    try:
        _collect(store_results, "ready", 1, 600, [store_proc])
        ready = _collect(results, "ready", len(idle_procs), 1800, idle_procs)
        enrolled = sum(r["agents"] for r in ready)
        enroll_s = max(r["enroll_s"] for r in ready)
        refused_enroll: Counter[str] = Counter()
        for r in ready:
            refused_enroll.update(r["enroll_refused"])
        print(f"streams phase: enrolled {enrolled} idle agents in {enroll_s:.1f} s "
              f"({enrolled / enroll_s:.0f}/s, {len(idle_procs)} client processes){'; refused or retried: ' + str(dict(refused_enroll)) if refused_enroll else ''}")
        go_store.set()  # the storing agents connect first, then the idle ones come
        time.sleep(2)
        start = time.monotonic()
        go.set()
        ramp = _collect(results, "ramped", len(idle_procs), 900, idle_procs)
        ramp_end = time.monotonic()
        ramped.set()
        ramp_status: Counter[str] = Counter()
        details: dict[str, str] = {}
        gave_up = sum(r["gave_up"] for r in ramp)
        for r in ramp:
            ramp_status.update(r["status"])
            details.update(r["details"])
        print(f"  ramp: {ramp_status['OK']} of {enrolled} idle streams acknowledged in {ramp_end - start:.1f} s; "
              f"refused attempts: {dict((k, v) for k, v in ramp_status.items() if k != 'OK') or 'none'}; "
              f"gave up after {args.attempts} attempts: {gave_up}")
        for code, text in details.items():
            print(f"    {code}: {text}")
        if profile is not None:
            profile.start(collector_pid, args.hold_seconds)
        time.sleep(args.hold_seconds)
        hold_end = time.monotonic()
        stop.set()
        idle_done = _collect(results, "done", len(idle_procs), 120, idle_procs)
        store_done = _collect(store_results, "done", 1, 180, [store_proc])
    finally:
        stop.set()
        for p in all_procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
    outcomes: list[AgentOutcome] = store_done[0]["outcomes"]
    storing = [o for o in outcomes if not o.late]
    late = [o for o in outcomes if o.late]
    acks = sorted((t, lat) for o in storing for (t, _), lat in zip(o.acks, o.latencies))

    def served(t0: float, t1: float) -> dict[str, Any]:
        inside = [a for a in acks if t0 <= a[0] <= t1]
        times = [t0] + [t for t, _ in inside] + [t1]
        return {"acks": len(inside), "max_gap_s": round(max(b - a for a, b in zip(times, times[1:])), 2),
                "p99_ack_ms": round(pct([lat for _, lat in inside], 0.99) * 1000, 1)}

    during_ramp, during_hold = served(start, ramp_end), served(ramp_end, hold_end)
    hold_events = sum(n for o in storing for t, n in o.acks if ramp_end <= t <= hold_end)
    offered = args.streams_rate * (hold_end - ramp_end)
    served_share = round(hold_events / offered, 2) if offered else 0.0
    hb: Counter[str] = Counter()
    for d in idle_done:
        hb.update(d["heartbeats"])
    hb_lat = [x for d in idle_done for x in d["hb_latency"]]
    held_stop = sum(d["held_at_stop"] for d in idle_done)
    dropped: Counter[str] = Counter()
    for d in idle_done:
        dropped.update(d["dropped"])
    storing_alive = sum(1 for o in storing if o.acks and (o.error is None or o.acks[-1][0] >= hold_end))
    errors = dict(Counter(o.error for o in storing if o.error))
    window = sampler.window(ramp_end, hold_end)
    return {
        "streams_requested": len(idle_tokens), "idle_enrolled": enrolled, "enroll_per_s": round(enrolled / enroll_s, 1),
        "enroll_refused": dict(refused_enroll), "idle_acked": ramp_status["OK"],
        "idle_refused": {k: v for k, v in ramp_status.items() if k != "OK"}, "idle_gave_up": gave_up,
        "ramp_s": round(ramp_end - start, 1), "refusal_details": details,
        "idle_held_at_end": held_stop, "idle_dropped": dict(dropped),
        "streams_held": held_stop + storing_alive, "storing_agents": len(storing),
        "storing_during_ramp": during_ramp, "storing_during_hold": during_hold, "storing_errors": errors,
        "storing_served_share_hold": served_share,
        "storing_kept_acked": served_share >= 0.9 and during_hold["max_gap_s"] < 5 and not errors,
        "idle_heartbeats_acked": hb["acked"], "idle_heartbeat_p99_ms": round(pct(hb_lat, 0.99) * 1000, 1),
        "late_agent_acked": [len(o.acks) for o in late], "late_agent_errors": [o.error for o in late],
        "collector_cpu_pct_hold": window["cpu_pct"], "collector_rss_mb_hold": window["rss_mb"],
        "client_rss_mb": round(sum(d["rss"] for d in idle_done) / 2**20, 1),
    }


DETECTION_COST_LIMIT = 0.20  # issue 9: detection may cost at most a fifth of the ingest rate


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return float("nan") if not n else (ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2)


def offline_cpu(agents: int, batches: int, per_batch: int, burst_reads: int) -> int:
    """CPU per 1,000 events of decoding, storing (SQLite) and detection, in this process, without gRPC or a
    second process: the agents' batches arrive in turn, and detection runs a round after every 4 batches of
    each agent, as the worker does under load. CPU time, so a loaded machine sways it little; the alerts'
    digest (rule, group, evidence in order, summary) says whether two trees found the same."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shoumi.batch import ChainHead, batch_hash, canonical_bytes

    from collector.detection.service import DetectionStage
    from collector.events.models import StoredBatch
    from collector.ingest import codec
    from collector.settings import CollectorSettings
    from collector.storage import open_store
    from collector.wiring import detection_rules

    now = 1_764_590_000 * 10**9  # fixed: the same events, hence the same alerts, in every run
    key = Ed25519PrivateKey.generate()
    per = [[raw for raw, _, _ in iter_batches(f"agent-{a:03d}", key, a, batches=batches, per_batch=per_batch,
                                              burst_reads=burst_reads if a == 0 else 0, created_ns=now)]
           for a in range(agents)]
    root = Path(tempfile.mkdtemp(prefix="shoumi-ingest-cpu-"))
    store = open_store(root)
    try:
        stage = DetectionStage(store, rules=detection_rules(CollectorSettings(data_dir=root)))
        heads: dict[str, ChainHead] = {}
        spent = Counter[str]()
        stored = looked = 0
        for i in range(batches):
            for a in range(agents):
                agent = f"agent-{a:03d}"
                t0 = time.process_time()
                b = codec.decode_batch(per[a][i])
                evs = codec.decode_events(b, per[a][i])  # from the bytes, as ingest does (in C where built)
                h = batch_hash(b)
                sb = StoredBatch(agent, b.epoch, b.first_seq, b.first_seq + len(evs) - 1, h, b.prev_batch_hash,
                                 b.signature, canonical_bytes(b), now)
                t1 = time.process_time()
                with store.transaction() as tx:
                    tx.store_batch(sb, evs, expected_head=heads.get(agent))
                spent["decode"] += t1 - t0
                spent["store"] += time.process_time() - t1
                heads[agent] = ChainHead(b.epoch, sb.last_seq, h)
                stored += len(evs)
            if (i + 1) % 4 == 0:
                t0 = time.process_time()
                looked += stage.run_once()
                spent["detect"] += time.process_time() - t0
        t0 = time.process_time()
        looked += stage.run_until_idle()
        spent["detect"] += time.process_time() - t0
        with store.read() as tx:
            alerts = tx.count_alerts()
            found = tx.list_alerts(cursor=None, limit=1_000_000).items
        digest = hashlib.sha256(repr(sorted((a.rule, a.group_key or "", a.evidence_count, a.event_ids, a.severity,
                                             a.summary) for a in found)).encode()).hexdigest()[:16]
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    ms = {k: round(1e6 * v / (looked if k == "detect" else stored), 2) for k, v in spent.items()}
    share = ms["detect"] / (ms["decode"] + ms["store"])
    # decode_events alone, on the parsed batches, from their bytes (C where built) and from upb's messages
    parsed = [(codec.decode_batch(raw), raw) for raws in per for raw in raws]
    us = {}
    for path, give_raw in (("bytes", True), ("messages", False)):
        t0 = time.process_time()
        for b, raw in parsed:
            codec.decode_events(b, raw if give_raw else None)
        us[path] = round(1e6 * (time.process_time() - t0) / stored, 2)
    print(f"offline, {agents} agents x {batches} batches of {per_batch}: CPU per 1,000 events: decode {ms['decode']} ms, "
          f"store {ms['store']} ms, detection {ms['detect']} ms ({share:.0%} of decode + store); alerts {alerts}, "
          f"digest {digest}; decode_events {us['bytes']} us/event from the bytes "
          f"({'C' if codec.compiled() else 'no C extension'}), {us['messages']} us/event from upb's messages")
    print(json.dumps({"offline": True, "events": stored, "detected": looked, "decode_ms_per_1k": ms["decode"],
                      "store_ms_per_1k": ms["store"], "detect_ms_per_1k": ms["detect"],
                      "detect_share_of_ingest_cpu": round(share, 3), "alerts": alerts, "alerts_digest": digest,
                      "decode_events_us": us, "decode_in_c": codec.compiled()}))
    return 0


def compare_detection(rounds: int) -> int:
    """Runs this bench with detection off and on in turn (off, on, off, on, ...: the same time window, so
    a loaded machine weighs on both alike), then prints the medians, the cost of detection in events/s and
    in CPU per 1,000 events, and one JSON line."""
    argv, skip = [], False
    for a in sys.argv[1:]:  # the same arguments, without --compare-detection N
        if skip:
            skip = False
            continue
        if a == "--compare-detection":
            skip = True
            continue
        if a.startswith("--compare-detection="):
            continue
        argv.append(a)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(rounds):
        for on in (False, True):
            env = dict(os.environ, SHOUMI_COLLECTOR_DETECTION_ENABLED="true" if on else "false")
            print(f"--- round {i + 1}/{rounds}, detection {'on' if on else 'off'} ---", flush=True)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env,
                                  capture_output=True, text=True)
            lines = done.stdout.splitlines()
            print("\n".join(x for x in lines if x.startswith(("  stored", "  CPU per", "  detection stage"))), flush=True)
            found = [json.loads(x) for x in lines if x.startswith("{")]
            if done.returncode != 0 or not found:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                return 1
            runs[on].append(found[-1])

    def med(on: bool, key: str) -> float:
        return _median([r[key] for r in runs[on] if isinstance(r.get(key), (int, float))])

    eps_off, eps_on = med(False, "events_per_s"), med(True, "events_per_s")
    serve_off, serve_on, worker = (med(False, "serve_cpu_ms_per_1k"), med(True, "serve_cpu_ms_per_1k"),
                                   med(True, "worker_cpu_ms_per_1k"))
    rate_cost = 1 - eps_on / eps_off if eps_off else float("nan")
    cpu_cost = (serve_on + worker - serve_off) / serve_off if serve_off else float("nan")
    print()
    print(f"detection off vs on, {rounds} round(s) each in turn, medians:")
    print(f"  events/s: off {eps_off:,.0f}, on {eps_on:,.0f} (each: off {[r['events_per_s'] for r in runs[False]]}, "
          f"on {[r['events_per_s'] for r in runs[True]]})")
    print(f"  detection costs {rate_cost:.0%} of the ingest rate  (limit <= {DETECTION_COST_LIMIT:.0%}: "
          f"{_mark(rate_cost <= DETECTION_COST_LIMIT)}); goal >= {GOAL_EVENTS_PER_S:,} events/s with detection on: "
          f"{_mark(eps_on >= GOAL_EVENTS_PER_S)}")
    print(f"  CPU per 1,000 events: serve off {serve_off:.1f} ms, serve on {serve_on:.1f} ms, detection worker "
          f"{worker:.1f} ms: detection adds {cpu_cost:.0%} to ingest's CPU (serve on + worker - serve off, over serve "
          f"off; far less swayed by a loaded machine than events/s)")
    out = {"compare_detection": rounds, "events_per_s_off": round(eps_off), "events_per_s_on": round(eps_on),
           "detection_rate_cost": round(rate_cost, 3), "detection_cpu_cost": round(cpu_cost, 3),
           "serve_cpu_ms_per_1k_off": round(serve_off, 2), "serve_cpu_ms_per_1k_on": round(serve_on, 2),
           "worker_cpu_ms_per_1k": round(worker, 2),
           "p99_ack_ms_on": med(True, "p99_ack_ms"), "backend": runs[True][0]["backend"],
           "events_per_batch": runs[True][0]["events_per_batch"], "agents": runs[True][0]["agents"],
           "goals_met": {"events_per_s": eps_on >= GOAL_EVENTS_PER_S, "detection_cost": rate_cost <= DETECTION_COST_LIMIT}}
    print(json.dumps(out))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=16, help="storing agents in the throughput phase")
    parser.add_argument("--events-per-batch", type=int, default=250)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seconds", type=float, default=20.0, help="length of the timed window")
    group.add_argument("--batches", type=int, help="send exactly this many batches per agent instead")
    parser.add_argument("--window", type=int, default=4, help="unacknowledged batches per agent stream")
    parser.add_argument("--rate", type=float, help="pace all agents to this many events/s (default: as fast as acked)")
    parser.add_argument("--max-rate", type=float, default=40_000,
                        help="pre-build enough batches for this many events/s (capped at 2,500 batches/s)")
    parser.add_argument("--burst-reads", type=int, default=3_000, help="one user's burst of reads (agent 0)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes of the throughput phase")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--database-url", help=f"PostgreSQL server (default $SHOUMI_TEST_PG_DSN or {DEFAULT_PG_DSN}); "
                        "fresh databases are created on it and dropped")
    parser.add_argument("--detection-wait", type=float, default=60.0,
                        help="after the window, wait this long at most for detection to catch up")
    parser.add_argument("--raw-rows", type=int, default=300_000, help="at most this many stored rows for the raw insert")
    parser.add_argument("--streams", type=int, default=0, help="idle agent streams to hold in the streams phase")
    parser.add_argument("--storing-agents", type=int, default=2, help="agents that keep storing in the streams phase")
    parser.add_argument("--streams-rate", type=float, default=2_000, help="their events/s in the streams phase")
    parser.add_argument("--hold-seconds", type=float, default=10.0, help="how long the idle streams are held")
    parser.add_argument("--heartbeat-s", type=float, default=30.0, help="idle agents' heartbeat interval")
    parser.add_argument("--idle-procs", type=int, default=None,
                        help="client processes holding idle streams (default: one per 2,500 streams, at least 2: "
                             "each stream is a TLS channel of its own, and 5,000 in one process outgrew 16 GB)")
    parser.add_argument("--enroll-concurrency", type=int, default=16, help="enrollments in flight per idle process")
    parser.add_argument("--attempts", type=int, default=4, help="stream openings per idle agent before it gives up")
    parser.add_argument("--connect-concurrency", type=int, default=64, help="stream openings in flight per process")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the collector during the timed window "
                        "(BENCH_PYSPY_GIL=1: only threads holding the GIL, i.e. where its CPU goes)")
    parser.add_argument("--summarize", metavar="RAW", help="only print the summary of a py-spy raw profile")
    parser.add_argument("--top", type=int, default=22, help="functions listed in the profile summary")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument("--event-ids", choices=("uuid7", "uuid4", "sequential"), default="uuid7",
                        help="event ids as the agent makes them (version 7 UUIDs, the default), random version 4 "
                             "UUIDs (agents before December 2026) or the agent's prefix and the seq")
    parser.add_argument("--offline", action="store_true",
                        help="only CPU per 1,000 events of decode, store (SQLite) and detection in one process, and "
                             "a digest of the alerts (--batches per agent, 16 by default)")
    parser.add_argument("--compare-detection", type=int, metavar="N", default=0,
                        help="run the bench 2N times, detection off and on in turn, and compare (issue 9: detection "
                             "costs at most a fifth of the ingest rate)")
    args = parser.parse_args()
    os.environ["BENCH_EVENT_IDS"] = args.event_ids  # read by the spawned client processes' EventFactory
    if args.compare_detection:
        return compare_detection(args.compare_detection)
    if args.offline:
        return offline_cpu(args.agents, args.batches or 16, args.events_per_batch, args.burst_reads)
    if args.summarize:
        print("\n".join(summarize_profile(Path(args.summarize), top=args.top)))
        return 0
    if args.agents < 1 or args.events_per_batch < 1 or args.window < 1:
        parser.error("--agents, --events-per-batch and --window must be positive")

    load_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="shoumi-ingest-"))
    data_dir = root / "collector"
    pg: PgDatabases | None = None
    pg_url: str | None = None
    collector = None
    sampler = None
    ctx = mp.get_context("spawn")
    figures: dict[str, Any] = {}
    try:
        if args.backend == "postgres":
            pg = PgDatabases(args.database_url or os.environ.get("SHOUMI_TEST_PG_DSN") or DEFAULT_PG_DSN)
            pg_url = pg.create("collector")
            os.environ["SHOUMI_COLLECTOR_DATABASE_URL"] = pg_url  # the collector, its CLI and in-process tokens
        collector, addr = start_collector(data_dir, root / "collector.log")
        target = Target(addr["grpc"], addr["enroll"], addr["ca_fingerprint"])
        sampler = Sampler(collector.pid)
        sampler.start()
        print(f"collector pid {collector.pid} on {target.grpc} (mutual TLS), enrollment {target.enroll}, "
              f"store {args.backend}; detection {'on (the default rules, in its worker process)' if _detecting() else 'OFF'}")
        t = time.monotonic()
        tokens = cli_tokens(data_dir, args.agents)
        print(f"{args.agents} tokens from `shoumi-collector enroll-token create` in {time.monotonic() - t:.1f} s")
        profile = PyspyRecorder(args.profile, args.top) if args.profile else None
        probe = DetectionProbe(db_url(args.backend, data_dir, pg_url))
        probe.start()
        main_figs = run_store_phase(ctx, target, tokens, args, max(1, min(args.client_procs, args.agents)), sampler,
                                    collector.pid, profile, probe)
        probe.stop()
        figures.update(main_figs)
        figures["stored_rows"] = count_events(db_url(args.backend, data_dir, pg_url))
        profile_lines = profile.finish() if profile else []
        streams_figs: dict[str, Any] | None = None
        if args.streams:
            t = time.monotonic()
            idle_tokens = inprocess_tokens(pg_url or str(data_dir), args.streams)
            token_s = time.monotonic() - t
            print(f"streams phase: {args.streams} tokens by the collector's EnrollmentService.create_token in-process "
                  f"in {token_s:.1f} s; {args.storing_agents} + 1 late storing agents with CLI tokens")
            store_tokens = cli_tokens(data_dir, args.storing_agents + 1)
            hold_profile = PyspyRecorder(f"{args.profile}-hold", args.top) if args.profile else None
            streams_figs = run_streams_phase(ctx, target, store_tokens[:-1], store_tokens[-1:], idle_tokens, args, sampler,
                                             hold_profile, collector.pid)
            if hold_profile is not None:
                profile_lines += ["", "while the idle streams are held:", *hold_profile.finish()]
            streams_figs["tokens_per_s"] = round(args.streams / token_s, 1)
        time.sleep(0.5)
        columns, rows, stored, alerts = read_back(db_url(args.backend, data_dir, pg_url), min(args.raw_rows, max(main_figs["acked"], 1)))
        sampler.stop()
        _stop_collector(collector)
        collector = None
        if args.backend == "postgres":
            assert pg is not None
            raws = raw_insert_postgres(pg.create("raw"), columns, rows)
            raw = raws["copy"]
            raw_how = "COPY (psycopg cursor.copy), 1,000 rows per transaction"
        else:
            raws = raw_insert_sqlite(root / "raw", columns, rows)
            raw = raws["dbapi"]
            raw_how = (f"sqlite3 executemany, 1,000 rows per transaction, WAL, synchronous=FULL; through SQLAlchemy "
                       f"Core executemany {raws['sqlalchemy']:,.0f} rows/s")
    finally:  # each step on its own, so one failure does not leave a collector or a database behind
        steps: list[Any] = [sampler.stop if sampler is not None else None, functools.partial(_stop_collector, collector),
                            pg.drop_all if pg is not None else None]
        for step in steps:
            try:
                if step is not None:
                    step()
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    load_end = os.getloadavg()[0]
    eps = figures["events_per_s"]
    ratio = round(eps / raw, 3) if raw else 0.0
    streams = streams_figs["streams_held"] if streams_figs else figures["streams_held"]
    p99 = figures["p99_ack_ms"]
    print()
    print(f"throughput phase: {args.agents} agents, {args.events_per_batch} events/batch, {args.event_ids} event ids, "
          f"window {args.window} batches "
          f"(<= {figures['in_flight_max_events']:,} events in flight), {figures['window_s']} s timed"
          f"{f', paced at {args.rate:,.0f} events/s' if args.rate else ''}")
    print(f"  stored {eps:,} events/s  (goal >= {GOAL_EVENTS_PER_S:,}: {_mark(eps >= GOAL_EVENTS_PER_S)}); "
          f"acked {figures['acked']:,} events in {figures['batches_acked']:,} batches; "
          f"events table held {figures['stored_rows']:,} after this phase")
    print(f"  raw insert of the same {len(rows):,} rows: {raw:,.0f} rows/s ({raw_how}); "
          f"ratio {ratio}  (goal >= {GOAL_RATIO}: {_mark(ratio >= GOAL_RATIO)})")
    print(f"  send -> durable Ack: p50 {figures['p50_ack_ms']} ms, p99 {p99} ms, max {figures['max_ack_ms']} ms  "
          f"(goal p99 < {GOAL_P99_MS:.0f} ms: {_mark(p99 < GOAL_P99_MS)})")
    lag, det, caught = (figures["detection_lag_events_at_end"], figures["detected_per_s"], figures["detection_caught_up_s"])
    if det is not None and _detecting():
        print(f"  detection stage (default rules): ran over {det:,} events/s in the window; events stored but not yet "
              f"looked at (lag, sampled every 0.5 s): mean {figures['detection_lag_mean_events'] or 0:,}, max "
              f"{figures['detection_lag_max_events'] or 0:,}, {lag:,} when it ended; caught up "
              f"{f'{caught} s after it' if caught is not None else f'NOT within {args.detection_wait:g} s'}")
    print(f"  collector: {figures['collector_cpu_pct']} % of a core, RSS {figures['collector_rss_mb']} MB, "
          f"{figures['collector_threads']} threads; its detection worker process {figures['detection_worker_cpu_pct']} % "
          f"of a core; clients: {figures['client_cpu_pct']} % of a core in "
          f"{figures['client_procs']} processes")
    if figures.get("collector_threads_cpu_pct"):
        print("  collector's threads (% of a core): "
              + ", ".join(f"{name} {pct}" for name, pct in figures["collector_threads_cpu_pct"].items()))
    if figures["serve_cpu_ms_per_1k"] is not None:
        w = figures["worker_cpu_ms_per_1k"]
        share = f"; detection's CPU is {w / figures['serve_cpu_ms_per_1k']:.0%} of ingest's" if w else ""
        print(f"  CPU per 1,000 events: serve {figures['serve_cpu_ms_per_1k']} ms"
              f"{f', detection worker {w} ms (from the window until it caught up)' if w else ''}{share}")
    print(f"  alerts raised: {alerts or 'none'}; stream errors: {figures['stream_errors'] or 'none'}"
          f"{'; ' + str(figures['ran_out']) + ' agents ran out of pre-built batches (rate is a lower bound)' if figures['ran_out'] else ''}")
    if streams_figs:
        s = streams_figs
        print(f"streams phase: {s['streams_requested']} idle agents (enrolled {s['idle_enrolled']} at {s['enroll_per_s']}/s) "
              f"+ {s['storing_agents']} storing at {args.streams_rate:,.0f} events/s, held {args.hold_seconds:g} s")
        print(f"  idle streams acknowledged {s['idle_acked']}, refused attempts {s['idle_refused'] or 'none'}, "
              f"gave up {s['idle_gave_up']}, "
              f"held at the end {s['idle_held_at_end']}, dropped {s['idle_dropped'] or 'none'}; "
              f"concurrent streams held: {s['streams_held']}  (goal >= {GOAL_STREAMS:,}: "
              f"{_mark(s['streams_held'] >= GOAL_STREAMS)}; aim {AIM_STREAMS:,})")
        r, h = s["storing_during_ramp"], s["storing_during_hold"]
        print(f"  storing agents kept being acknowledged while the streams were held: {s['storing_kept_acked']} "
              f"(hold: {s['storing_served_share_hold']:.0%} of the offered {args.streams_rate:,.0f} events/s stored, "
              f"{h['acks']} Acks, longest gap {h['max_gap_s']} s, p99 {h['p99_ack_ms']} ms; ramp: {r['acks']} Acks, "
              f"longest gap {r['max_gap_s']} s, p99 {r['p99_ack_ms']} ms; errors {s['storing_errors'] or 'none'}); "
              f"an agent connecting after the ramp: "
              f"{'acknowledged' if s['late_agent_acked'] and s['late_agent_acked'][0] else 'refused ' + str(s['late_agent_errors'])}")
        print(f"  idle agents' heartbeats (every {args.heartbeat_s:g} s, as the agent's default): {s['idle_heartbeats_acked']} "
              f"acknowledged, p99 {s['idle_heartbeat_p99_ms']} ms")
        print(f"  collector while holding: {s['collector_cpu_pct_hold']} % of a core, RSS {s['collector_rss_mb_hold']} MB; "
              f"idle clients RSS {s['client_rss_mb']} MB")
    print(f"machine: load average {load_start:.1f} at the start, {load_end:.1f} at the end ({os.cpu_count()} cores; "
          "others share it, so compare figures of one run)")
    for line in profile_lines:
        print(line)
    out: dict[str, Any] = {
        "events_per_s": eps, "raw_insert_per_s": round(raw), "ratio": ratio, "p99_ack_ms": p99, "streams": streams,
        "backend": args.backend, "detection": _detecting(), "event_ids": args.event_ids, "events_per_batch": args.events_per_batch, "agents": args.agents,
        "window": args.window, "p50_ack_ms": figures["p50_ack_ms"], "collector_cpu_pct": figures["collector_cpu_pct"],
        "detection_worker_cpu_pct": figures["detection_worker_cpu_pct"],
        "collector_rss_mb": figures["collector_rss_mb"], "client_cpu_pct": figures["client_cpu_pct"],
        "acked": figures["acked"], "stored_rows": figures["stored_rows"], "alerts": alerts,
        "detected_per_s": figures["detected_per_s"], "detection_lag_events_at_end": figures["detection_lag_events_at_end"],
        "detection_caught_up_s": figures["detection_caught_up_s"],
        "serve_cpu_ms_per_1k": figures["serve_cpu_ms_per_1k"], "worker_cpu_ms_per_1k": figures["worker_cpu_ms_per_1k"],
        "detection_lag_max_events": figures["detection_lag_max_events"],
        "detection_lag_mean_events": figures["detection_lag_mean_events"],
        "raw_rows": len(rows), **{f"raw_{k}_per_s": round(v) for k, v in raws.items()},
    }
    out["loadavg_1m"] = [round(load_start, 1), round(load_end, 1)]
    if streams_figs:
        out["streams_phase"] = streams_figs
    out["goals_met"] = {"events_per_s": eps >= GOAL_EVENTS_PER_S, "ratio": ratio >= GOAL_RATIO,
                        "p99_ack_ms": p99 < GOAL_P99_MS, "streams": streams >= GOAL_STREAMS}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
