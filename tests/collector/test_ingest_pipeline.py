"""Ingest's throughput design, by behaviour: a stream's batches read ahead of their Acks are stored in
order and once; a refused batch ends its stream without the batches behind it being refused (and
alerted) one by one; decoded attributes carry the exact text the store writes; detection in its own
worker process goes on from the stored positions after a kill and stops with the collector."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import struct_pb2

from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.detection.worker import DetectionWorker
from collector.events.models import EventFilter
from collector.ingest.codec import Attributes, decode_events
from collector.ingest.service import IngestService
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.wiring import Built, build_services

from tests.conftest import ChainWriter, PerCall, make_event

MIN = 60_000_000_000


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Built]:
    settings = CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", insecure_dev=True)
    built = build_services(settings, store=PerCall(open_store(tmp_path)))  # type: ignore[arg-type]
    built.grpc.start()
    yield built
    built.grpc.stop(grace=0)
    built.ingest.close()
    built.store.close()


def _enroll(collector: Built, channel: grpc.Channel, key: Ed25519PrivateKey) -> str:
    token = collector.enrollment.create_token(tx=collector.store, actor="test")
    reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
        ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws", os="Linux"),
        timeout=10)
    return str(reply.agent_id)


def _events(collector: Built) -> list[int]:
    return [e.seq for e in collector.store.list_events(EventFilter(), cursor=None, limit=10_000).items]


def test_batches_sent_ahead_are_stored_in_order_once_and_acked_in_order(collector: Built,
                                                                        agent_key: Ed25519PrivateKey) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        writer = ChainWriter(_enroll(collector, channel, agent_key), agent_key)
        batches = [writer.next(7) for _ in range(40)]  # all written at once: the collector reads ahead
        acks = list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter(batches), timeout=30))
    assert [a.acked_seq for a in acks] == [7 * (i + 1) for i in range(40)]
    assert sorted(_events(collector)) == list(range(1, 281))  # each event once, none missing
    assert collector.ingest.counters["batches.stored"] == 40
    assert not [k for k in collector.ingest.counters if k.startswith("rejected.")]


def test_a_refused_batch_ends_its_stream_and_the_batches_behind_it_are_not_refused_again(
        collector: Built, agent_key: Ed25519PrivateKey) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        agent_id = _enroll(collector, channel, agent_key)
        writer = ChainWriter(agent_id, agent_key)
        first = writer.next(3)
        forged = writer.next(3)
        original = events_pb2.EventBatch()
        original.CopyFrom(forged)
        forged.events[0].path = "/srv/finance/innocent.txt"  # the signature no longer covers it
        behind = [writer.next(3) for _ in range(6)]  # chained onto the forged batch: cannot be stored
        acks: list[events_pb2.Ack] = []
        with pytest.raises(grpc.RpcError) as refused:
            for ack in ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([first, forged, *behind]),
                                                                               timeout=30):
                acks.append(ack)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "bad_signature" in refused.value.details()
    assert [a.acked_seq for a in acks] == [3]
    assert sorted(_events(collector)) == [1, 2, 3]
    counters = collector.ingest.counters
    assert counters["rejected.bad_signature"] == 1
    assert counters["rejected.chain_broken"] == 0  # what followed was answered ABORTED, not judged
    with collector.store.read() as tx:
        tamper = [a for a in tx.list_alerts(cursor=None, limit=10).items if a.rule.startswith("agent_")]
    assert len(tamper) == 1 and tamper[0].rule == "agent_tamper" and tamper[0].occurrences == 1
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:  # the true batch and those behind it
        acks = list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([original, *behind]), timeout=30))
    assert [a.acked_seq for a in acks] == [6, 9, 12, 15, 18, 21, 24]
    assert sorted(_events(collector)) == list(range(1, 25))


def test_decoded_attributes_carry_the_text_the_store_writes() -> None:
    batch = events_pb2.EventBatch(agent_id="a", epoch=1, first_seq=1)
    values = [{}, {"b": 1, "a": "x"}, {"中文": "值", "nested": {"z": [1, "2", None, True], "a": {}}, "n": -0.5}]
    for i, v in enumerate(values):
        ev = batch.events.add()
        ev.CopyFrom(make_event(i + 1))
        if v:
            s = struct_pb2.Struct()
            s.update(v)
            ev.attributes.CopyFrom(s)
    decoded = decode_events(batch)
    for e, v in zip(decoded, values):
        assert isinstance(e.attributes, Attributes)
        plain = json.loads(json.dumps(v))  # numbers as the Struct holds them (floats)
        assert e.attributes == {k: (float(x) if isinstance(x, int) and not isinstance(x, bool) else x)
                                for k, x in plain.items()} or not v
        assert e.attributes.text == (json.dumps(dict(e.attributes), sort_keys=True, ensure_ascii=False) if v else "{}")


def _eventually(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_detection_worker_process_detects_goes_on_after_a_kill_and_stops(tmp_path: Path,
                                                                         agent_key: Ed25519PrivateKey) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from collector.enrollment.service import EnrollmentService

    rules = tmp_path / "rules.toml"
    rules.write_text("[read_burst]\nthreshold = 5\nwindow_minutes = 1\n")
    settings = CollectorSettings(data_dir=tmp_path, insecure_dev=True, rules_file=rules, detection_seconds=0.05)
    store = open_store(tmp_path)
    svc = EnrollmentService(token_ttl_ns=10 * MIN)
    with store.transaction() as tx:
        token = svc.create_token(tx=tx, actor="test")
        agent_id = svc.enroll(tx=tx, token=token, public_key=agent_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw), hostname="ws", os_name="Linux", agent_version="t", peer="t").agent_id
    ingest = IngestService(store)
    writer = ChainWriter(agent_id, agent_key)
    worker = DetectionWorker(settings)
    worker.start()
    try:
        def lag() -> int:
            with store.read() as tx:
                return tx.detection_lag()

        def bursts() -> list[int]:
            with store.read() as tx:
                return [len(a.event_ids) for a in tx.list_alerts(cursor=None, limit=10).items if a.rule == "read_burst"]

        for _ in range(3):
            ingest.ingest(writer.next(4))
        _eventually(lambda: lag() == 0 and bursts() == [12], timeout=30, what="the worker ran over 12 reads")
        first_pid = worker.pid
        assert first_pid is not None and first_pid != os.getpid()
        os.kill(first_pid, signal.SIGKILL)
        _eventually(lambda: worker.pid is None, timeout=10, what="the killed worker ended")
        for _ in range(2):
            ingest.ingest(writer.next(4))
        worker.ensure_running()  # what the serve process does every few seconds
        assert worker.pid not in (None, first_pid) and worker.starts == 2
        # it goes on from the stored position: the same incident's alert grows, nothing is seen twice
        _eventually(lambda: lag() == 0 and bursts() == [20], timeout=30, what="the restarted worker went on")
        ingest.ingest(writer.next(4))
        proc_pid = worker.pid
        worker.stop(timeout=30)  # runs until idle first
        assert lag() == 0 and bursts() == [24]
        assert worker.pid is None and proc_pid is not None
        worker.ensure_running()  # stopped on purpose: not started again
        assert worker.pid is None
    finally:
        worker.stop(timeout=10)
        ingest.close()
        store.close()


def test_write_gate_lets_one_writer_in_at_a_time_and_hands_over_at_once(tmp_path: Path) -> None:
    import threading

    from collector.ingest.gate import WriteGate

    first, second = WriteGate.for_store(tmp_path, None), WriteGate.for_store(tmp_path, None)  # two "processes"
    order: list[str] = []
    inside = threading.Event()

    def other() -> None:
        with second.held():
            order.append("second in")

    with first.held():
        order.append("first in")
        waiter = threading.Thread(target=other)
        waiter.start()
        inside.wait(0.2)  # the other writer is kept out meanwhile
        assert order == ["first in"]
        order.append("first out")
    waiter.join(5)
    assert order == ["first in", "first out", "second in"]
    assert oct((tmp_path / "collector.db.writer").stat().st_mode & 0o777) == "0o600"
    with WriteGate.for_store(tmp_path, "postgresql://x/y").held():  # a database server needs no gate
        pass


def test_one_detection_round_writes_many_agents_and_shares_a_users_state_between_them(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from collector.detection.service import DetectionStage
    from collector.enrollment.service import EnrollmentService

    from tests.conftest import _burst

    store = open_store(tmp_path)
    svc = EnrollmentService(token_ttl_ns=10 * MIN)
    ingest = IngestService(store)
    writers = []
    for i in range(2):  # one user on two workstations
        key = Ed25519PrivateKey.generate()
        with store.transaction() as tx:
            token = svc.create_token(tx=tx, actor="test")
            agent_id = svc.enroll(tx=tx, token=token, public_key=key.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw), hostname=f"ws{i}", os_name="Linux", agent_version="t", peer="t").agent_id
        writers.append(ChainWriter(agent_id, key))
    try:
        for w in writers:
            ingest.ingest(w.next(3, user="alice"))
        writes: list[int] = []
        real = store.transaction

        def counted() -> object:
            writes.append(1)
            return real()

        stage = DetectionStage(store, rules=_burst(threshold=5, minutes=1))
        store.transaction = counted  # type: ignore[method-assign]
        try:
            assert stage.run_once() == 6
        finally:
            store.transaction = real  # type: ignore[method-assign]
        assert len(writes) == 1  # both agents' results in one write
        with store.read() as tx:
            bursts = [a for a in tx.list_alerts(cursor=None, limit=10).items if a.rule == "read_burst"]
            assert tx.detection_lag() == 0
        assert len(bursts) == 1 and len(bursts[0].event_ids) == 6  # 3 + 3 reads of one user > 5 in a minute
        assert stage.run_once() == 0
    finally:
        ingest.close()
        store.close()


def test_a_batch_the_store_could_not_take_ends_its_stream_without_a_tamper_alert(tmp_path: Path) -> None:
    from contextlib import contextmanager
    from typing import Any

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from collector.enrollment.service import EnrollmentService
    from collector.ingest.service import IngestError, StreamState
    from collector.storage.base import StoreUnavailable

    store = open_store(tmp_path)
    key = Ed25519PrivateKey.generate()
    svc = EnrollmentService(token_ttl_ns=10 * MIN)
    with store.transaction() as tx:
        token = svc.create_token(tx=tx, actor="test")
        agent_id = svc.enroll(tx=tx, token=token, public_key=key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw), hostname="ws", os_name="Linux", agent_version="t", peer="t").agent_id

    class Flaky:  # the real store, whose next write fails as a database gone away does
        def __init__(self) -> None:
            self.fail = 1

        @contextmanager
        def transaction(self) -> Iterator[Any]:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailable("the database cannot be reached or written; retry later")
            with store.transaction() as tx:
                yield tx

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    ingest = IngestService(Flaky())  # type: ignore[arg-type]
    writer = ChainWriter(agent_id, key)
    stream = StreamState()
    try:
        first, behind = writer.next(2), writer.next(2)
        assert isinstance(ingest.submit(first, stream=stream).exception(timeout=10), StoreUnavailable)
        refused = ingest.submit(behind, stream=stream).exception(timeout=10)
        assert isinstance(refused, IngestError) and refused.reason == "after_refusal"
        assert ingest.counters["rejected.chain_broken"] == 0
        with store.read() as tx:
            assert tx.list_alerts(cursor=None, limit=10).items == ()
        again = StreamState()  # the agent reconnects and resends both
        assert [ingest.submit(b, stream=again).result(timeout=10).acked_seq for b in (first, behind)] == [2, 4]
    finally:
        ingest.close()
        store.close()
