"""The ``user`` and ``api-token`` commands of shoumi-collector: accounts from the shell, each action audited.

    shoumi-collector user create --username U --role ROLE [--password-stdin] [--lang zh|en]
    shoumi-collector user list
    shoumi-collector user disable|enable --username U
    shoumi-collector user passwd --username U            (the new password on stdin)
    shoumi-collector api-token create --username U [--name N] [--days D]
    shoumi-collector api-token list --username U
    shoumi-collector api-token revoke --username U --id ID
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

__all__ = ["add_people_parsers", "run_user", "run_api_token"]


def add_people_parsers(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds the ``user`` and ``api-token`` commands to the collector's subcommands."""
    user = sub.add_parser("user", help="people who use the UI and API")
    user_sub = user.add_subparsers(dest="action", required=True)
    create = user_sub.add_parser("create", help="create a user")
    store_args(create)
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, help="it_admin, security_analyst, hr, auditor or employee")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    create.add_argument("--lang", default="zh", choices=("zh", "en"), help="the language of the user's pages")
    store_args(user_sub.add_parser("list", help="every user, role and state"))
    for action, text in (("disable", "disable a user: their sessions and tokens stop at once"),
                         ("enable", "enable a disabled user again"),
                         ("passwd", "set a user's password, read from stdin; their sessions end")):
        p = user_sub.add_parser(action, help=text)
        store_args(p)
        p.add_argument("--username", required=True)

    api = sub.add_parser("api-token", help="bearer tokens for the API")
    api_sub = api.add_subparsers(dest="action", required=True)
    api_create = api_sub.add_parser("create", help="print a new bearer token for a user")
    store_args(api_create)
    api_create.add_argument("--username", required=True)
    api_create.add_argument("--name", help="what the token is for")
    api_create.add_argument("--days", type=int, help="days until it expires (default 90, at most 365)")
    api_list = api_sub.add_parser("list", help="a user's tokens (ids, never secrets)")
    store_args(api_list)
    api_list.add_argument("--username", required=True)
    api_revoke = api_sub.add_parser("revoke", help="revoke one of a user's tokens by its id")
    store_args(api_revoke)
    api_revoke.add_argument("--username", required=True)
    api_revoke.add_argument("--id", dest="token_id", required=True)


def _service(settings: Any) -> Any:
    from collector.people.service import PeopleService

    return PeopleService(session_ttl_ns=int(settings.session_hours * 3600e9))


def run_user(settings: Any, args: argparse.Namespace, actor: str) -> int:
    """Runs one ``user`` command; returns the exit code (PeopleError is reported by the caller)."""
    from collector.storage import open_store

    password = None
    if args.action == "passwd" or (args.action == "create" and args.password_stdin):
        password = sys.stdin.readline().rstrip("\r\n")
    people = _service(settings)
    store = open_store(settings.store_location())
    try:
        with store.transaction() as tx:  # the action and its audit row commit together
            if args.action == "create":
                user = people.create_user(tx=tx, username=args.username, role=args.role, password=password,
                                          actor=actor, lang=args.lang)
                print(f"created user {user.username} with role {user.role}", file=sys.stderr)
            elif args.action == "list":
                for u in tx.list_users():
                    state = "disabled" if u.disabled else "enabled"
                    print(f"{u.username}\t{u.role}\t{state}\t{u.lang}\t{'password' if u.password_hash else 'tokens only'}")
            elif args.action in ("disable", "enable"):
                people.set_disabled(tx=tx, username=args.username, disabled=args.action == "disable", actor=actor)
                print(f"{args.action}d {args.username}", file=sys.stderr)
            else:
                people.reset_password(tx=tx, username=args.username, password=password or "", actor=actor)
                print(f"password of {args.username} set; their sessions ended", file=sys.stderr)
    finally:
        store.close()
    return 0


def run_api_token(settings: Any, args: argparse.Namespace, actor: str) -> int:
    """Runs one ``api-token`` command; returns the exit code."""
    from collector.storage import open_store
    from collector.web.timefmt import format_ns

    people = _service(settings)
    store = open_store(settings.store_location())
    try:
        with store.transaction() as tx:
            if args.action == "create":
                token, row = people.issue_api_token(tx=tx, username=args.username, actor=actor, name=args.name,
                                                    days=args.days)
                print(token)
                print(f"token {row.id} expires {format_ns(row.expires_at_ns)}", file=sys.stderr)
            elif args.action == "list":
                people.get_user(tx=tx, username=args.username)
                for t in people.list_api_tokens(tx=tx, username=args.username):
                    expires = "never" if t.expires_at_ns is None else format_ns(t.expires_at_ns)
                    print(f"{t.id}\t{t.name or '-'}\t{'revoked' if t.revoked else 'active'}\texpires {expires}")
            else:
                people.revoke_api_token(tx=tx, username=args.username, token_id=args.token_id, actor=actor)
                print(f"revoked {args.token_id}", file=sys.stderr)
    finally:
        store.close()
    return 0
