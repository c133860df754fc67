"""The accounts API: users (it_admin), one's own account, API tokens. Secrets are shown once, at creation."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from collector.people.models import User, UserToken
from collector.people.http import http_error, peer_of
from collector.people.service import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, PeopleError
from collector.web.deps import SESSION_COOKIE, Services, require, services
from collector.web.timefmt import format_ns

__all__ = ["router", "UserOut", "TokenOut", "TokenIssued", "user_out", "token_out"]

router = APIRouter(prefix="/api/v1")
_NAME = Path(..., max_length=128)
_TOKEN_ID = Path(..., min_length=16, max_length=16, pattern="^[0-9a-f]{16}$")


class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""

    username: str
    role: str
    disabled: bool
    lang: str
    has_password: bool
    created_at: str
    provider: str | None = None  # signed in through "oidc", "ldap" or "wecom" (collector/people/sso); None: local


class UserList(BaseModel):
    """Every user."""

    items: list[UserOut]


class UserCreate(BaseModel):
    """A new user: without a password it can use API tokens only."""

    username: str = Field(..., min_length=1, max_length=128)
    role: str = Field(..., max_length=32)
    password: str | None = Field(None, min_length=12, max_length=1024)
    lang: Literal["zh", "en"] = "zh"


class PasswordReset(BaseModel):
    """An administrator's new password for a user."""

    password: str = Field(..., min_length=12, max_length=1024)


class PasswordChange(BaseModel):
    """One's own new password, with the current one."""

    current_password: str = Field(..., min_length=1, max_length=1024)
    new_password: str = Field(..., min_length=12, max_length=1024)


class LangChoice(BaseModel):
    """The language of one's pages."""

    lang: Literal["zh", "en"]


class TokenCreate(BaseModel):
    """A new API token: a name to recognise it by, and its lifetime in days."""

    name: str | None = Field(None, max_length=100)
    days: int = Field(DEFAULT_TOKEN_DAYS, ge=1, le=MAX_TOKEN_DAYS)


class TokenOut(BaseModel):
    """An API token as listed: its id and dates, never its secret."""

    id: str
    name: str | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked: bool
    expired: bool


class TokenList(BaseModel):
    """A user's API tokens, newest first."""

    items: list[TokenOut]


class TokenIssued(TokenOut):
    """A token just made: ``token`` is its secret, shown this once."""

    token: str


def user_out(u: User) -> UserOut:
    """Shapes a user for the API."""
    return UserOut(username=u.username, role=u.role, disabled=u.disabled, lang=u.lang,
                   has_password=u.password_hash is not None, created_at=format_ns(u.created_at_ns), provider=u.provider)


def token_out(t: UserToken, now_ns: int) -> TokenOut:
    """Shapes a token for the API."""
    return TokenOut(id=t.id, name=t.name, created_at=format_ns(t.created_at_ns),
                    expires_at=None if t.expires_at_ns is None else format_ns(t.expires_at_ns),
                    last_used_at=None if t.last_used_ns is None else format_ns(t.last_used_ns), revoked=t.revoked,
                    expired=t.expires_at_ns is not None and t.expires_at_ns <= now_ns)


# --- users (it_admin) -------------------------------------------------------------------------------
@router.get("/users", response_model=UserList)
def list_users(who: User = Depends(require("users:admin")), svc: Services = Depends(services)) -> UserList:
    """Lists every user."""
    with svc.store.read() as tx:
        return UserList(items=[user_out(u) for u in tx.list_users()])


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, who: User = Depends(require("users:admin")),
                svc: Services = Depends(services)) -> UserOut:
    """Creates a user with one role."""
    try:
        with svc.store.transaction() as tx:
            user = svc.people.create_user(tx=tx, username=body.username, role=body.role, password=body.password,
                                          actor=who.username, lang=body.lang)
    except PeopleError as exc:
        raise http_error(exc) from exc
    return user_out(user)


@router.get("/users/{username}", response_model=UserOut)
def get_user(username: str = _NAME, who: User = Depends(require("users:admin")),
             svc: Services = Depends(services)) -> UserOut:
    """Gets one user."""
    try:
        with svc.store.read() as tx:
            return user_out(svc.people.get_user(tx=tx, username=username))
    except PeopleError as exc:
        raise http_error(exc) from exc


def _set_disabled(svc: Services, username: str, disabled: bool, actor: str) -> UserOut:
    try:
        with svc.store.transaction() as tx:
            return user_out(svc.people.set_disabled(tx=tx, username=username, disabled=disabled, actor=actor))
    except PeopleError as exc:
        raise http_error(exc) from exc


@router.post("/users/{username}/disable", response_model=UserOut)
def disable_user(username: str = _NAME, who: User = Depends(require("users:admin")),
                 svc: Services = Depends(services)) -> UserOut:
    """Disables a user: every session and token of theirs stops at once."""
    return _set_disabled(svc, username, True, who.username)


@router.post("/users/{username}/enable", response_model=UserOut)
def enable_user(username: str = _NAME, who: User = Depends(require("users:admin")),
                svc: Services = Depends(services)) -> UserOut:
    """Enables a user again (their old tokens stay revoked)."""
    return _set_disabled(svc, username, False, who.username)


@router.post("/users/{username}/password", response_model=UserOut)
def reset_password(body: PasswordReset, username: str = _NAME, who: User = Depends(require("users:admin")),
                   svc: Services = Depends(services)) -> UserOut:
    """Sets a new password for a user; their sessions end."""
    try:
        with svc.store.transaction() as tx:
            return user_out(svc.people.reset_password(tx=tx, username=username, password=body.password,
                                                      actor=who.username))
    except PeopleError as exc:
        raise http_error(exc) from exc


@router.get("/users/{username}/tokens", response_model=TokenList)
def list_user_tokens(username: str = _NAME, who: User = Depends(require("users:admin")),
                     svc: Services = Depends(services)) -> TokenList:
    """Lists a user's API tokens."""
    try:
        with svc.store.read() as tx:
            svc.people.get_user(tx=tx, username=username)
            rows = svc.people.list_api_tokens(tx=tx, username=username)
    except PeopleError as exc:
        raise http_error(exc) from exc
    now = svc.people.clock()
    return TokenList(items=[token_out(t, now) for t in rows])


@router.post("/users/{username}/tokens", response_model=TokenIssued, status_code=201)
def create_user_token(body: TokenCreate, username: str = _NAME, who: User = Depends(require("users:admin")),
                      svc: Services = Depends(services)) -> TokenIssued:
    """Creates an API token for a user (a script's account, say); the secret is in the answer only."""
    return _issue(svc, username, who.username, body)


@router.post("/users/{username}/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_user_token(username: str = _NAME, token_id: str = _TOKEN_ID, who: User = Depends(require("users:admin")),
                      svc: Services = Depends(services)) -> TokenOut:
    """Revokes one of a user's API tokens."""
    return _revoke(svc, username, token_id, who.username)


# --- one's own account --------------------------------------------------------------------------------
@router.get("/account", response_model=UserOut)
def my_account(who: User = Depends(require("account:self"))) -> UserOut:
    """The caller's own account."""
    return user_out(who)


@router.post("/account/password", status_code=204)
def change_password(body: PasswordChange, request: Request, who: User = Depends(require("account:self")),
                    svc: Services = Depends(services)) -> Response:
    """Changes one's own password with the current one; one's other sessions end."""
    try:
        svc.people.change_password(store=svc.store, username=who.username, current=body.current_password,
                                   new=body.new_password, peer=peer_of(request),
                                   keep_session=request.cookies.get(SESSION_COOKIE))
    except PeopleError as exc:
        raise http_error(exc) from exc
    return Response(status_code=204)


@router.post("/account/lang", response_model=UserOut)
def set_my_lang(body: LangChoice, who: User = Depends(require("account:self")),
                svc: Services = Depends(services)) -> UserOut:
    """Sets the language of one's pages."""
    try:
        with svc.store.transaction() as tx:
            return user_out(svc.people.set_lang(tx=tx, username=who.username, lang=body.lang))
    except PeopleError as exc:
        raise http_error(exc) from exc


@router.get("/tokens", response_model=TokenList)
def list_my_tokens(who: User = Depends(require("account:self")), svc: Services = Depends(services)) -> TokenList:
    """Lists one's own API tokens (never their secrets)."""
    with svc.store.read() as tx:
        rows = svc.people.list_api_tokens(tx=tx, username=who.username)
    now = svc.people.clock()
    return TokenList(items=[token_out(t, now) for t in rows])


@router.post("/tokens", response_model=TokenIssued, status_code=201)
def create_my_token(body: TokenCreate, who: User = Depends(require("account:self")),
                    svc: Services = Depends(services)) -> TokenIssued:
    """Creates an API token for oneself; the secret is in the answer only."""
    return _issue(svc, who.username, who.username, body)


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_my_token(token_id: str = _TOKEN_ID, who: User = Depends(require("account:self")),
                    svc: Services = Depends(services)) -> TokenOut:
    """Revokes one of one's own API tokens."""
    return _revoke(svc, who.username, token_id, who.username)


def _issue(svc: Services, username: str, actor: str, body: TokenCreate) -> TokenIssued:
    try:
        with svc.store.transaction() as tx:
            secret, row = svc.people.issue_api_token(tx=tx, username=username, actor=actor, name=body.name,
                                                     days=body.days)
    except PeopleError as exc:
        raise http_error(exc) from exc
    return TokenIssued(token=secret, **token_out(row, svc.people.clock()).model_dump())


def _revoke(svc: Services, username: str, token_id: str, actor: str) -> TokenOut:
    try:
        with svc.store.transaction() as tx:
            row = svc.people.revoke_api_token(tx=tx, username=username, token_id=token_id, actor=actor)
    except PeopleError as exc:
        raise http_error(exc) from exc
    return token_out(row, svc.people.clock())
