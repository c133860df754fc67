"""Wires the collector's parts from its settings: the one place that knows them all."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from collector.alerts.service import raise_alert
from collector.detection.models import ReadBurst, RuleSet
from collector.detection.config import RulesError, load_rules, summarize
from collector.detection.service import DetectionStage
from collector.enrollment.service import EnrollmentService
from collector.evidence.views import EvidenceConfig
from collector.evidence.witnesses import submitter_for
from collector.fleet import service as fleet
from collector.ingest.gate import WriteGate
from collector.ingest.grpc_server import GrpcServers, Limits, Listeners, TlsMaterial
from collector.ingest.service import IngestService
from collector.cases.handoff import HandoffWorker, build_handoff_worker
from collector.agreements import service as agreements
from collector.cases.views import CaseConfig
from collector.notify.worker import NotifyWorker, build_worker
from collector.people.service import PeopleService
from collector.people.sso.service import load_sso
from collector.periodic import Periodic
from collector.wecom.runtime import build_wecom
from collector.pki import CertificateAuthority
from collector.policy.delivery import REFRESH_SECONDS as POLICY_REFRESH_SECONDS
from collector.policy.delivery import PolicyDelivery, load_or_create_policy_key
from collector.retention import service as retention
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.storage.base import Store
from collector.transparency import TreeHeadSigner, TreeInconsistent, load_or_create_tree_key
from collector.web.app import create_app

__all__ = ["Built", "build_services", "detection_rules", "reload_rules", "sign_tree_head"]

log = logging.getLogger("shoumi.collector")


@dataclass
class Built:
    """The collector's parts, ready to start."""

    store: Store
    ingest: IngestService
    detection: DetectionStage
    enrollment: EnrollmentService
    people: PeopleService
    signer: TreeHeadSigner
    background: Periodic
    app: FastAPI
    grpc: GrpcServers
    ca: CertificateAuthority
    rules: RuleSet = field(default_factory=RuleSet)  # the detection rules in force (reload_rules replaces them)
    rules_file: Path | None = None
    notifier: NotifyWorker | None = None  # WeCom robots and email (collector/notify); None: none set
    handoff: HandoffWorker | None = None  # the payroll outbox's worker (collector/cases); None: no bridge set

    @property
    def listeners(self) -> Listeners:
        """The ports bound (after ``grpc.start()``)."""
        return self.grpc.listeners

    @property
    def grpc_port(self) -> int:
        """The agent listener's port."""
        return self.grpc.listeners.agent_port


def build_services(settings: CollectorSettings, store: Store | None = None) -> Built:
    """Builds every part from the settings; nothing listens until ``grpc.start()``."""
    # a bad rules file is refused before anything is opened (RulesError names its line and key)
    file_rules = load_rules(settings.rules_file) if settings.rules_file else None
    agreements_cfg = agreements.load_config(settings.agreements)  # so are unreadable CA files, a TSA without its CA
    sso = load_sso(settings.sso)  # and sso settings that cannot work (secret files, role maps): SsoConfigError
    if store is None:
        store = open_store(settings.store_location())
    gate = WriteGate.for_store(settings.data_dir, settings.database_url)  # SQLite: one writer, handed over at once
    ingest = IngestService(store, max_events_per_batch=settings.max_events_per_batch,
                           max_clock_skew_ns=int(settings.max_clock_skew_seconds * 1e9), write_gate=gate,
                           committers=settings.ingest_committers or (2 if settings.database_url else 1))
    rules = detection_rules(settings, file_rules)
    detection = DetectionStage(store, rules=rules, write_gate=gate)
    ca = CertificateAuthority.load_or_create(settings.data_dir)
    tls = None
    if not settings.insecure_dev:
        server_key, server_chain = ca.server_identity(extra_names=tuple(settings.tls_names))
        tls = TlsMaterial(ca.cert_pem, ca.key_pem, server_key, server_chain)
    enrollment = EnrollmentService(token_ttl_ns=int(settings.enroll_token_ttl_hours * 3600e9),
                                   ca=None if settings.insecure_dev else ca,
                                   cert_lifetime=dt.timedelta(days=settings.client_cert_days))
    people = PeopleService(session_ttl_ns=int(settings.session_hours * 3600e9),
                           session_idle_ns=int(settings.session_idle_minutes * 60e9),
                           concurrent_password_checks=settings.password_check_slots,
                           password_check_wait_s=settings.password_check_wait_seconds)
    servers = GrpcServers(
        ingest=ingest, enrollment=enrollment, store=store, listen=settings.grpc_listen,
        enroll_listen=settings.enroll_listen, tls=tls,
        limits=Limits(max_message_bytes=settings.max_message_bytes,
                      max_connection_age_s=settings.max_connection_age_seconds,
                      max_streams_per_agent=settings.max_streams_per_agent, workers=settings.ingest_workers,
                      enroll_timeout_s=settings.enroll_timeout_seconds, max_enroll_calls=settings.max_enroll_calls,
                      handshake_timeout_s=settings.handshake_timeout_seconds),
    )
    signer = TreeHeadSigner(store, load_or_create_tree_key(settings.data_dir))
    witnesses = submitter_for(store, settings)  # collector/evidence/witnesses.py: cosigned heads
    signer.witnesses = witnesses.run_once if witnesses is not None else None
    ingest.policies = PolicyDelivery(store, load_or_create_policy_key(settings.data_dir))  # pushed on the Acks
    ingest.policies.refresh_quietly()
    background = Periodic()
    if settings.detection_enabled and not settings.detection_process:  # else serve starts its DetectionWorker
        background.every(settings.detection_seconds, "detection", detection.run_until_idle)
    background.every(settings.silence_check_seconds, "silence-check", lambda: check_silence(store))
    background.every(settings.tree_head_seconds, "tree-head", lambda: sign_tree_head(signer, store))
    background.every(POLICY_REFRESH_SECONDS, "policy-refresh", ingest.policies.refresh_quietly)
    policy = settings.retention_policy()  # every kind with a period (docs/privacy.md)
    background.every(settings.retention_check_seconds, "retention",
                     lambda: retention.run_retention(store=store, policy=policy, now_ns=time.time_ns()))
    notifier = build_worker(store, settings.notify)
    if notifier is not None:  # started and stopped with the other background jobs
        background.every(settings.notify.interval_seconds, "notify", notifier.run_once)
    handoff = build_handoff_worker(store, settings.cases)
    if handoff is not None:  # the payroll outbox (collector/cases), started and stopped with the other jobs
        background.every(settings.cases.payroll_poll_seconds, "payroll-handoff", handoff.run_once)
    # notices to employees through WeCom / email, their proof of service to the bridge (collector/wecom)
    wecom = build_wecom(settings, store, bridge=handoff.client if handoff is not None else None)
    background.every(settings.notify.interval_seconds, "wecom-notices", wecom.worker.run_once)
    if wecom.staff is not None:  # an analyst assigned an alert, HR asked to confirm: to their own WeCom
        background.every(settings.notify.interval_seconds, "wecom-staff", wecom.staff.run_once)
    if agreements_cfg.tsa_url:  # acknowledgements the TSA could not seal at once are retried
        background.every(agreements_cfg.seal_retry_seconds, "agreement-seals", lambda: agreements.seal_pending(
            store=store, cfg=agreements_cfg, now=time.time_ns))
    app = create_app(store=store, people=people, enrollment=enrollment, counters=ingest.counters,
                     detection=detection, open_streams=servers.open_streams, spool_depths=ingest.spool_depths)
    app.state.policies = ingest.policies  # views refresh it after a change
    app.state.cases = CaseConfig(max_attachment_bytes=settings.cases.max_attachment_bytes)
    app.state.evidence = EvidenceConfig(settings.data_dir, [w.key() for w in settings.witnesses])
    app.state.agreements = agreements_cfg  # trust roots and the TSA (collector/agreements)
    app.state.sso = sso  # OpenID Connect, LDAP, WeCom sign-in (collector/people/sso)
    app.state.wecom = wecom  # the WeCom application: notices, callback crypto (collector/wecom)
    app.state.retention_days = settings.retention_days  # the monitoring notice says how long events are kept
    app.state.retention_policy = settings.retention_policy()  # the /privacy page shows the periods in force
    return Built(store, ingest, detection, enrollment, people, signer, background, app, servers, ca,
                 rules=rules, rules_file=settings.rules_file, notifier=notifier, handoff=handoff)


def detection_rules(settings: CollectorSettings, file_rules: RuleSet | None = None) -> RuleSet:
    """The rules file's rules, else the defaults with the read-burst thresholds of the settings."""
    if file_rules is None and settings.rules_file:
        file_rules = load_rules(settings.rules_file)
    if file_rules is not None:
        return file_rules
    det = settings.detection  # the command line (and SHOUMI_COLLECTOR_DETECTION__*) over the defaults
    return RuleSet(read_burst=ReadBurst(threshold=det.read_burst_threshold, window_minutes=det.read_burst_window_minutes))


def reload_rules(built: Built) -> RuleSet | RulesError:
    """Re-reads the rules file into ``built.rules``; a file that fails keeps the last good rules (logged)."""
    if built.rules_file is None:
        return built.rules
    try:
        rules = load_rules(built.rules_file)
    except RulesError as exc:
        log.error("rules reload failed, keeping the last good rules: %s", exc.render())
        return exc
    built.rules = rules
    built.detection.use(rules)  # from the next event on; the rules' states are kept
    log.warning("rules reloaded from %s: %s", built.rules_file, summarize(rules))
    return rules


def check_silence(store: Store) -> None:
    """Marks silent agents and alerts on them."""
    with store.transaction() as tx:
        fleet.check_silence(tx=tx, now_ns=time.time_ns())


def sign_tree_head(signer: TreeHeadSigner, store: Store) -> None:
    """Signs a new tree head; if the stored tree no longer matches the last head, says so loudly."""
    try:
        signer.sign_and_witness()
    except TreeInconsistent as exc:
        log.error("the stored Merkle tree does not match its last signed head: %s", exc)
        with store.transaction() as tx:
            raise_alert(tx=tx, rule="store_tamper", severity="critical", now_ns=time.time_ns(),
                        group_key="store_tamper",
                        summary=f"the stored evidence no longer matches its signed tree head: {exc}; "
                                "run shoumi-collector verify")
