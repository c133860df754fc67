"""Mutual TLS on loopback: enrollment with a pinned CA, client certificates bound to agents, and
every way a peer can be refused (unknown CA, expired, revoked, another agent's certificate)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.tls import TLS_NAME
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from agent.tls import TlsError, check_issued, fetch_pinned_ca, new_key_and_csr
from collector.events.models import EventFilter
from collector.pki import CertificateAuthority, fingerprint_of
from collector.settings import CollectorSettings
from collector.wiring import Built, build_services

from collector.fleet import service as fleet
from collector.storage import open_store

from tests.conftest import ChainWriter, PerCall


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Built]:
    built = build_services(CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"),
                           store=PerCall(open_store(tmp_path)))  # type: ignore[arg-type]
    built.grpc.start()
    yield built
    built.grpc.stop(grace=0)
    built.store.close()


class Agent:
    """What an enrolled agent holds: its signing key, TLS key and certificate."""

    def __init__(self, agent_id: str, key: Ed25519PrivateKey, tls_key: bytes, cert: bytes, ca: bytes) -> None:
        self.agent_id, self.key, self.tls_key, self.cert, self.ca = agent_id, key, tls_key, cert, ca

    def channel(self, port: int, *, key: bytes | None = None, cert: bytes | None = None) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(self.ca, key or self.tls_key, cert or self.cert)
        return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", TLS_NAME)])


def _enroll(collector: Built) -> Agent:
    ca = fetch_pinned_ca("127.0.0.1", collector.listeners.enroll_port, collector.ca.fingerprint())
    key = Ed25519PrivateKey.generate()
    tls_key, csr = new_key_and_csr()
    token = collector.enrollment.create_token(tx=collector.store, actor="test")
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(f"127.0.0.1:{collector.listeners.enroll_port}", creds,
                             options=[("grpc.ssl_target_name_override", TLS_NAME)]) as ch:
        reply = ingest_pb2_grpc.EnrollmentServiceStub(ch).Enroll(ingest_pb2.EnrollRequest(
            token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws", csr_pem=csr), timeout=10)
    check_issued(bytes(reply.client_certificate_pem), ca, reply.agent_id)
    assert reply.ingest_port == collector.listeners.agent_port
    return Agent(reply.agent_id, key, tls_key, bytes(reply.client_certificate_pem), ca)


def _stream(channel: grpc.Channel, batches: list[events_pb2.EventBatch]) -> list[events_pb2.Ack]:
    with channel:
        return list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter(batches), timeout=10))


def test_enrolled_agent_streams_over_mutual_tls(collector: Built) -> None:
    agent = _enroll(collector)
    writer = ChainWriter(agent.agent_id, agent.key)
    acks = _stream(agent.channel(collector.listeners.agent_port), [writer.next(5), writer.next(5)])
    assert [a.acked_seq for a in acks] == [5, 10]
    assert len(collector.store.list_events(EventFilter(), cursor=None, limit=100).items) == 10


def test_a_wrong_pin_sends_no_token(collector: Built) -> None:
    other = CertificateAuthority.load_or_create(collector.ca.directory / "elsewhere")
    with pytest.raises(TlsError, match="not the pinned"):
        fetch_pinned_ca("127.0.0.1", collector.listeners.enroll_port, other.fingerprint())


def test_plaintext_and_certificate_less_peers_are_refused(collector: Built, agent_key: Ed25519PrivateKey) -> None:
    batch = ChainWriter("agt-x", agent_key).next(1)
    with pytest.raises(grpc.RpcError) as plaintext:
        _stream(grpc.insecure_channel(f"127.0.0.1:{collector.listeners.agent_port}"), [batch])
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = collector.ca.cert_pem
    no_cert = grpc.secure_channel(f"127.0.0.1:{collector.listeners.agent_port}", grpc.ssl_channel_credentials(ca),
                                  options=[("grpc.ssl_target_name_override", TLS_NAME)])
    with pytest.raises(grpc.RpcError) as refused:
        _stream(no_cert, [batch])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake demands a client certificate
    on_enroll_port = grpc.secure_channel(f"127.0.0.1:{collector.listeners.enroll_port}", grpc.ssl_channel_credentials(ca),
                                         options=[("grpc.ssl_target_name_override", TLS_NAME)])
    with pytest.raises(grpc.RpcError) as wrong_port:
        _stream(on_enroll_port, [batch])
    assert wrong_port.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the enrollment listener serves enrollment only


def test_a_certificate_from_an_unknown_ca_is_refused(collector: Built, tmp_path: Path) -> None:
    agent = _enroll(collector)
    rogue = CertificateAuthority.load_or_create(tmp_path / "rogue")
    key, csr = new_key_and_csr()
    forged = rogue.issue_client(csr_pem=csr, agent_id=agent.agent_id, lifetime=dt.timedelta(days=1))
    with pytest.raises(grpc.RpcError) as refused:
        _stream(agent.channel(collector.listeners.agent_port, key=key, cert=forged.pem),
                [ChainWriter(agent.agent_id, agent.key).next(1)])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert collector.store.list_events(EventFilter(), cursor=None, limit=10).items == ()


def test_an_expired_certificate_is_refused(collector: Built) -> None:
    agent = _enroll(collector)
    key, csr = new_key_and_csr()
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    expired = collector.ca.issue_client(csr_pem=csr, agent_id=agent.agent_id, lifetime=dt.timedelta(days=1), not_before=past)
    collector.store.add_certificate(serial=expired.serial, agent_id=agent.agent_id,
                                    not_before_ns=expired.not_before_ns, not_after_ns=expired.not_after_ns)
    with pytest.raises(grpc.RpcError) as refused:
        _stream(agent.channel(collector.listeners.agent_port, key=key, cert=expired.pem),
                [ChainWriter(agent.agent_id, agent.key).next(1)])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_revoked_certificate_is_refused(collector: Built) -> None:
    agent = _enroll(collector)
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(agent.cert).serial_number
    assert collector.store.revoke_certificate(serial=serial, now_ns=1)
    with pytest.raises(grpc.RpcError) as refused:
        _stream(agent.channel(collector.listeners.agent_port), [ChainWriter(agent.agent_id, agent.key).next(1)])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked_certificate" in refused.value.details()


def test_agent_a_certificate_with_agent_b_events_is_refused_and_alerted(collector: Built) -> None:
    a, b = _enroll(collector), _enroll(collector)
    b_batch = ChainWriter(b.agent_id, b.key).next(2)  # properly signed by B, sent over A's connection
    with pytest.raises(grpc.RpcError) as refused:
        _stream(a.channel(collector.listeners.agent_port), [b_batch])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "identity_mismatch" in refused.value.details()
    alerts = [x for x in collector.store.list_alerts(cursor=None, limit=10).items if x.rule == "agent_tamper"]
    # filed against the certificate's agent, who sent it, not against the agent the batch names
    assert alerts and b.agent_id in alerts[0].summary and alerts[0].agent_id == a.agent_id
    assert collector.store.list_events(EventFilter(), cursor=None, limit=10).items == ()


def test_renewal_issues_a_fresh_bound_certificate(collector: Built) -> None:
    agent = _enroll(collector)
    key, csr = new_key_and_csr()
    with agent.channel(collector.listeners.agent_port) as ch:
        reply = ingest_pb2_grpc.CertificateServiceStub(ch).Renew(ingest_pb2.RenewRequest(csr_pem=csr), timeout=10)
    fresh = bytes(reply.client_certificate_pem)
    check_issued(fresh, agent.ca, agent.agent_id)
    assert fingerprint_of(fresh) != fingerprint_of(agent.cert)
    acks = _stream(agent.channel(collector.listeners.agent_port, key=key, cert=fresh),
                   [ChainWriter(agent.agent_id, agent.key).next(1)])
    assert [a.acked_seq for a in acks] == [1]
    fleet.revoke(tx=collector.store, agent_id=agent.agent_id, actor="it", now_ns=1)  # type: ignore[arg-type]
    with agent.channel(collector.listeners.agent_port, key=key, cert=fresh) as ch:
        with pytest.raises(grpc.RpcError) as refused:
            ingest_pb2_grpc.CertificateServiceStub(ch).Renew(ingest_pb2.RenewRequest(csr_pem=csr), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_agent_renewer_replaces_its_identity_in_place(collector: Built, tmp_path: Path) -> None:
    from agent.tls import CertificateRenewer, channel_factory, save_identity

    agent = _enroll(collector)
    state = tmp_path / "agent-state"
    state.mkdir()
    save_identity(state, key_pem=agent.tls_key, cert_pem=agent.cert, ca_pem=agent.ca)
    renewer = CertificateRenewer(state, agent.agent_id, [f"127.0.0.1:{collector.listeners.agent_port}"])
    assert not renewer.due()
    assert renewer.due(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=5))  # 2/3 of 7 days
    before = (state / "tls-identity.pem").read_bytes()
    renewer.renew()
    after = (state / "tls-identity.pem").read_bytes()
    assert after != before and (state / "tls-identity.pem").stat().st_mode & 0o777 == 0o600
    acks = _stream(channel_factory(state)(f"127.0.0.1:{collector.listeners.agent_port}"),
                   [ChainWriter(agent.agent_id, agent.key).next(1)])
    assert [a.acked_seq for a in acks] == [1]
