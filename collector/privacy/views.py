"""Revealing the real name behind a pseudonym: with a reason, for the roles that need it, audited."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from collector.alerts.inputs import CleanInput
from collector.people.models import User
from collector.privacy.service import REASON_MAX, PrivacyError, reveal
from collector.web.deps import Services, require, services

__all__ = ["router"]

router = APIRouter()


class RevealRequest(CleanInput):
    """Which pseudonym to reveal and why (10 to 500 characters; kept in the audit log)."""

    pseudonym: str = Field(..., min_length=1, max_length=64)
    reason: str = Field(..., max_length=REASON_MAX * 4, description="10 to 500 characters")


class RevealOut(BaseModel):
    """The pseudonym as asked and the user name behind it."""

    pseudonym: str
    user: str


@router.post("/api/v1/identities/reveal", response_model=RevealOut)
def reveal_identity(body: RevealRequest, who: User = Depends(require("identity:reveal")),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    """Returns the user name behind a pseudonym; 422 without a reason of 10-500 characters. Audited with the reason."""
    try:
        with svc.store.transaction() as tx:
            name = reveal(tx=tx, pseudonym=body.pseudonym, reason=body.reason, actor=who.username,
                          now_ns=time.time_ns())
    except PrivacyError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return {"pseudonym": body.pseudonym.strip(), "user": name}
