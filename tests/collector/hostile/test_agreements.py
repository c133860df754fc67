"""Hostile PDF uploads against the agreement import (HR's): deeply nested objects, a decompression bomb in an
xref stream, something that is not a PDF. Each is a 422 with a reason (never a 500), nothing is stored."""

from __future__ import annotations

import struct
import zlib
from typing import Any, Callable

import pytest

from tests.collector.accounts.conftest import csrf_of
from tests.collector.agreements.conftest import AgWorld, ag, pki, tsa  # noqa: F401  (the fixtures)
from tests.collector.agreements.test_agreements import _employee_session, _import


def _nested() -> bytes:
    catalog = b"<< /Type /Catalog /AcroForm << /Fields [" + b"[" * 100_000 + b"]" * 100_000 + b"] >> >>"
    body = b"%PDF-1.7\n1 0 obj\n" + catalog + b"\nendobj\n"
    xref = len(body)
    return body + (b"xref\n0 2\n0000000000 65535 f \n0000000009 00000 n \ntrailer\n<< /Size 2 /Root 1 0 R >>\n"
                   b"startxref\n%d\n%%%%EOF\n" % xref)


def _xref_bomb() -> bytes:
    """An xref stream that inflates to 200 MiB."""
    out = bytearray(b"%PDF-1.7\n")
    o1 = len(out)
    out += b"1 0 obj\n<< /Type /Catalog /AcroForm << /Fields [] >> >>\nendobj\n"
    o2 = len(out)
    c = zlib.compressobj(9)
    raw = c.compress(struct.pack(">BIHBIHBIH", 0, 0, 65535, 1, o1, 0, 1, o2, 0))
    raw += b"".join(c.compress(bytes(1 << 20)) for _ in range(200)) + c.flush()
    out += (b"2 0 obj\n<< /Type /XRef /Size 3 /W [1 4 2] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n"
            % len(raw)) + raw + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % o2
    return bytes(out)


@pytest.mark.parametrize("make", [_nested, _xref_bomb, lambda: b"%PDF-" + bytes(range(256)) * 100])
def test_a_hostile_pdf_is_a_422_and_nothing_is_stored(ag: AgWorld,  # noqa: F811
                                                      make: Callable[[], bytes]) -> None:
    ids = ag.setup_employee()
    got: Any = _import(ag, make(), ids["nda_v"])
    assert got.status_code == 422, got.text[:300]
    assert "Traceback" not in got.text and "/work/" not in got.text and "site-packages" not in got.text
    assert ag.ok(ag.api("hana", "GET", "/api/v1/agreements/people/E-1001"))["records"] == []


def test_an_employee_acknowledging_again_and_again_makes_one_record_and_one_tsa_request(
        ag: AgWorld) -> None:  # noqa: F811
    """An employee's script posting the acknowledgement in a loop: each post would add a record and ask the TSA
    (a service with a quota, shared by every acknowledgement); the first record is the proof, the rest change
    nothing."""
    ids = ag.setup_employee()
    c: Any = _employee_session(ag)
    sha = ag.ok(ag.api("hana", "GET", f"/api/v1/agreements/versions/{ids['notice_v']}"))["sha256"]
    csrf = csrf_of(c, "/me/notices")
    made = [ag.ok(c.post(f"/api/v1/me/notices/{ids['notice_v']}/acknowledge", json={"text_sha256": sha},
                         headers={"X-CSRF-Token": csrf}), 201) for _ in range(5)]
    assert len({m["id"] for m in made}) == 1 and made[0]["seal"] == "sealed"
    assert len(c.get("/api/v1/me/notices").json()["records"]) == 1 and ag.tsa.requests == 1
