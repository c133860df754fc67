"""Wires the collector's parts from its settings: the one place that knows them all."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import grpc
from fastapi import FastAPI

from collector.domain.detection import ReadBurstRule
from collector.enrollment import EnrollmentService
from collector.domain.records import Alert
from collector.fleet import FleetService
from collector.periodic import Periodic
from collector.ingest.grpc_server import Listeners, TlsMaterial, build_grpc_server
from collector.ingest.service import IngestService
from collector.people import PeopleService
from collector.pki import CertificateAuthority
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.storage.base import Store
from collector.transparency import TreeHeadSigner, TreeInconsistent, load_or_create_tree_key
from collector.web.app import create_app

__all__ = ["Built", "build_services", "sign_tree_head"]

log = logging.getLogger("shoumi.collector")


@dataclass
class Built:
    """The collector's parts, ready to start."""

    store: Store
    ingest: IngestService
    enrollment: EnrollmentService
    people: PeopleService
    fleet: FleetService
    signer: TreeHeadSigner
    background: Periodic
    app: FastAPI
    grpc_server: grpc.Server
    listeners: Listeners
    ca: CertificateAuthority

    @property
    def grpc_port(self) -> int:
        """The agent listener's port."""
        return self.listeners.agent_port


def build_services(settings: CollectorSettings, store: Store | None = None) -> Built:
    """Builds every part from the settings; the gRPC server is bound but not started."""
    store = store or open_store(settings.store_location())
    det = settings.detection
    ingest = IngestService(
        store,
        read_burst=ReadBurstRule(
            threshold=det.read_burst_threshold, window_ns=int(det.read_burst_window_minutes * 60e9)
        ),
        max_events_per_batch=settings.max_events_per_batch,
        max_clock_skew_ns=int(settings.max_clock_skew_seconds * 1e9),
    )
    ca = CertificateAuthority.load_or_create(settings.data_dir)
    tls = None
    if not settings.insecure_dev:
        server_key, server_chain = ca.server_identity(extra_names=tuple(settings.tls_names))
        tls = TlsMaterial(ca.cert_pem, ca.key_pem, server_key, server_chain)
    enrollment = EnrollmentService(
        store,
        token_ttl_ns=int(settings.enroll_token_ttl_hours * 3600e9),
        ca=None if settings.insecure_dev else ca,
        cert_lifetime=dt.timedelta(days=settings.client_cert_days),
    )
    people = PeopleService(store, session_ttl_ns=int(settings.session_hours * 3600e9))
    server, listeners = build_grpc_server(
        ingest=ingest,
        enrollment=enrollment,
        listen=settings.grpc_listen,
        enroll_listen=settings.enroll_listen,
        tls=tls,
        max_message_bytes=settings.max_message_bytes,
        workers=settings.grpc_workers,
        max_connection_age_s=settings.max_connection_age_seconds,
    )
    fleet = FleetService(store)
    signer = TreeHeadSigner(store, load_or_create_tree_key(settings.data_dir))
    background = Periodic()
    background.every(settings.silence_check_seconds, "silence-check", fleet.check_silence)
    background.every(settings.tree_head_seconds, "tree-head", lambda: sign_tree_head(signer, store))
    return Built(store, ingest, enrollment, people, fleet, signer, background, create_app(store=store, people=people, counters=ingest.counters),
                 server, listeners, ca)


def sign_tree_head(signer: TreeHeadSigner, store: Store) -> None:
    """Signs a new tree head; if the stored tree no longer matches the last head, says so loudly."""
    try:
        signer.sign_if_grown()
    except TreeInconsistent as exc:
        log.error("the stored Merkle tree does not match its last signed head: %s", exc)
        now = time.time_ns()
        existing = store.latest_open_alert(rule="store_tamper", agent_id="")
        if existing is None:
            store.add_alert(Alert(rule="store_tamper", severity="critical", status="open", user="", agent_id="",
                                  created_at_ns=now, updated_at_ns=now, event_ids=(), last_event_ns=now,
                                  summary=f"the stored evidence no longer matches its signed tree head: {exc}; "
                                          "run shoumi-collector verify"))
