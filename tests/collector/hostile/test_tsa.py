"""A malicious timestamp authority against ``request_timestamp`` (called in the employee's acknowledgement request
and by the sealing job): an answer dribbled for ever or a huge one is a TsaUnavailable within the timeout, so the
acknowledgement stays pending (retried) and the web worker is freed."""

from __future__ import annotations

import threading

import pytest

from collector.agreements.service import AgreementConfig, TsaUnavailable, request_timestamp

from tests.collector.hostile.servers import hostile_server


@pytest.mark.parametrize("mode", ["dribble", "huge"])
def test_a_hostile_tsa_is_unavailable_within_its_timeout(mode: str) -> None:
    with hostile_server(mode, "application/timestamp-reply") as url:
        cfg = AgreementConfig(tsa_url=url, tsa_ca=b"unused", tsa_timeout_seconds=1)
        got: list[BaseException] = []

        def ask() -> None:
            try:
                request_timestamp(cfg, b"\x00" * 32)
            except BaseException as exc:  # noqa: BLE001  (what the test looks at)
                got.append(exc)

        job = threading.Thread(target=ask, daemon=True)
        job.start()
        job.join(30)  # far beyond the 1 s timeout
        assert not job.is_alive(), "the TSA held the caller past its timeout"
    assert len(got) == 1 and isinstance(got[0], TsaUnavailable), got
