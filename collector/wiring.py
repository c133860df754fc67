"""Wires the collector's parts from its settings: the one place that knows them all."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fastapi import FastAPI

from collector.domain.detection import ReadBurstRule
from collector.enrollment import EnrollmentService
from collector.fleet import FleetService
from collector.ingest.grpc_server import build_grpc_server
from collector.ingest.service import IngestService
from collector.people import PeopleService
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.storage.base import Store
from collector.web.app import create_app

__all__ = ["Built", "build_services"]


@dataclass
class Built:
    """The collector's parts, ready to start."""

    store: Store
    ingest: IngestService
    enrollment: EnrollmentService
    people: PeopleService
    fleet: FleetService
    app: FastAPI
    grpc_server: grpc.Server
    grpc_port: int


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
    )
    enrollment = EnrollmentService(store, token_ttl_ns=int(settings.enroll_token_ttl_hours * 3600e9))
    people = PeopleService(store, session_ttl_ns=int(settings.session_hours * 3600e9))
    server, port = build_grpc_server(
        ingest=ingest,
        enrollment=enrollment,
        listen=settings.grpc_listen,
        max_message_bytes=settings.max_message_bytes,
        workers=settings.grpc_workers,
        max_connection_age_s=settings.max_connection_age_seconds,
    )
    fleet = FleetService(store)
    return Built(store, ingest, enrollment, people, fleet, create_app(store=store, people=people), server, port)
