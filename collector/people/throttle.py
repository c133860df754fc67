"""Login throttling as data: the rules, and what a failure or a check does to a count. No I/O.

Failed sign-ins are counted under three keys at once, each in its own rule:

============  ========================  ===========  ====================  ==========
scope         key                       locks after  first lock, growing   at most
============  ========================  ===========  ====================  ==========
``pair``      (account, address)        5 in 15 min  1 min, doubling       60 min
``account``   the account               20 in 15 min 5 min, doubling       60 min
``address``   the address               100 in 15 m  15 min, doubling      60 min
============  ========================  ===========  ====================  ==========

How the numbers were chosen, so a lockout cannot be used to lock everyone out:

* The **pair** rule does the work: a guesser at one address gets 5 tries per 15 minutes per
  account, then waits 1, 2, 4 ... up to 60 minutes; the real user at another address is untouched.
* The **account** rule is slower (20) and catches guessing spread over many addresses (at 5 per
  pair that takes at least 4 addresses). It does not apply at an address that signed in to the
  account successfully within the last 30 days (``known``): the owner's usual machine still gets
  in while a botnet is locked out, so the worst an attacker can do is delay the owner on a new
  machine for at most an hour at a time.
* The **address** rule (100, failures across all accounts) stops password spraying from one
  address; 100 leaves room for an office behind one NAT address where people mistype.
* An address is an IPv4 address or an IPv6 /64 (what one subscriber usually holds), so rotating
  through one's own /64 buys no more guesses. Behind a reverse proxy the collector must be given
  the client's address (uvicorn's proxy headers), or every caller counts as the proxy.
* Lockouts are forgotten after a day without failures, so the doubling starts again at its first
  step. Counts live in the database (table login_throttle), so every collector on one PostgreSQL
  sees the same counts; keys are keyed hashes of the account name, never the typed text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from collector.people.models import ThrottleState

__all__ = ["ThrottleRule", "RULES", "KNOWN_SCOPE", "KNOWN_FOR_NS", "remaining_ns", "after_failure"]

_MIN = 60 * 10**9
KNOWN_SCOPE = "known"
KNOWN_FOR_NS = 30 * 24 * 60 * _MIN
_FORGET_NS = 24 * 60 * _MIN


@dataclass(frozen=True)
class ThrottleRule:
    """After ``failures`` failures within ``window_ns`` a key is locked, longer each time."""

    scope: str
    failures: int
    window_ns: int
    first_lock_ns: int
    max_lock_ns: int


RULES: tuple[ThrottleRule, ...] = (
    ThrottleRule("pair", 5, 15 * _MIN, 1 * _MIN, 60 * _MIN),
    ThrottleRule("account", 20, 15 * _MIN, 5 * _MIN, 60 * _MIN),
    ThrottleRule("address", 100, 15 * _MIN, 15 * _MIN, 60 * _MIN),
)


def remaining_ns(state: ThrottleState | None, now_ns: int) -> int:
    """How long the key stays locked (0: not locked)."""
    return 0 if state is None else max(0, state.locked_until_ns - now_ns)


def after_failure(rule: ThrottleRule, state: ThrottleState | None, *, key: str, now_ns: int) -> ThrottleState:
    """The count after one more failure: a new window when the last one is over, a lock at the threshold."""
    if state is None:
        state = ThrottleState(rule.scope, key, 0, now_ns)
    if now_ns - state.window_start_ns > _FORGET_NS and state.locked_until_ns <= now_ns:
        state = replace(state, lockouts=0)
    if now_ns - state.window_start_ns > rule.window_ns:
        state = replace(state, failures=0, window_start_ns=now_ns)
    failures = state.failures + 1
    if failures < rule.failures:
        return replace(state, failures=failures)
    lock = min(rule.first_lock_ns * 2 ** min(state.lockouts, 32), rule.max_lock_ns)
    return replace(state, failures=0, window_start_ns=now_ns, locked_until_ns=now_ns + lock,
                   lockouts=state.lockouts + 1)
