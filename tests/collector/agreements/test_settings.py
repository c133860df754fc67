"""The agreements settings: certificates read at start, the TSA needs its CA, the seal retry runs with the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from collector.agreements.service import AgreementConfig, seal_pending
from collector.settings import AgreementSettings, CollectorSettings
from collector.storage import MemoryStore
from collector.wiring import build_services

from tests.collector.agreements.pki import Pki


def test_the_collector_reads_its_trust_roots_and_retries_seals_in_the_background(tmp_path: Path, pki: Pki) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.pem(pki.ca_cert) + pki.pem(pki.tsa_cert))
    settings = CollectorSettings(data_dir=tmp_path / "d", insecure_dev=True, agreements=AgreementSettings(
        trust_roots=[ca], tsa_url="http://127.0.0.1:9/tsa", tsa_ca_file=ca, seal_retry_seconds=5))
    built = build_services(settings, store=MemoryStore())
    cfg = built.app.state.agreements
    assert isinstance(cfg, AgreementConfig) and cfg.trust_roots == (pki.ca_cert.public_bytes(Encoding.DER),
                                                                   pki.tsa_cert.public_bytes(Encoding.DER))
    assert ("agreement-seals", 5) in [(name, s) for name, s, _ in built.background._jobs]
    quiet = build_services(CollectorSettings(data_dir=tmp_path / "q", insecure_dev=True), store=MemoryStore())
    assert "agreement-seals" not in [name for name, _, _ in quiet.background._jobs]
    assert seal_pending(store=MemoryStore(), cfg=quiet.app.state.agreements, now=lambda: 0) == 0


def test_a_tsa_without_its_ca_or_a_bad_certificate_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tsa_ca_file"):
        build_services(CollectorSettings(data_dir=tmp_path, insecure_dev=True, agreements=AgreementSettings(
            tsa_url="http://127.0.0.1:9/tsa")), store=MemoryStore())
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError):
        build_services(CollectorSettings(data_dir=tmp_path, insecure_dev=True, agreements=AgreementSettings(
            trust_roots=[junk])), store=MemoryStore())
    with pytest.raises(ValueError, match="https://"):
        AgreementSettings(tsa_url="ftp://tsa")
