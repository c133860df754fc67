"""The rule engine: stored events in, findings out, each rule's state in plain values. No I/O.

Theory of operation
-------------------
Every rule keeps a small state per key (a user, or an agent) as plain JSON values, and looks at each
event once, in the order the stage gives them (one agent's events in chain order), updating that
state in amortised O(1): a sliding window of times, an hour's count and a running baseline, a set
of folders seen. So a burst of a million reads costs a million steps, and the findings do not
depend on how the events were cut into batches: the same stream gives the same states.

A finding is evidence for a *group*: the rule, its key and the episode it belongs to (the time the
episode began). The stage raises the group's alert once and folds later evidence into it
(collector/alerts/service.py). An episode ends when no new evidence came for the rule's
``group_minutes``; the next evidence begins another, hence another alert.

States stay bounded: windows hold only what is inside them, ``first_access`` holds at most
``max_folders_per_user`` folders per user, ``bulk_read`` a fixed handful of numbers.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from collector.detection.models import RuleSet
from collector.events.models import StoredEvent

__all__ = ["Finding", "Rule", "Engine", "build_rules", "State"]

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
State = dict[str, Any]
_READ_KINDS = frozenset({"file.read"})
_ACCESS_KINDS = frozenset({"file.read", "file.write", "file.copy", "file.move", "file.delete", "usb.write"})


@dataclass
class Finding:
    """Evidence for one alert group: the events, and a sentence for the analyst.

    The sentence is made only for the last finding of a group in a run (``summary``): a burst yields
    evidence on every read, and formatting times for each would cost more than the rule itself.
    """

    rule: str
    severity: str
    group_key: str
    user: str
    agent_id: str
    event_ids: list[str]
    first_ns: int
    last_ns: int
    sentence: Callable[[], str]
    path: str = ""  # the latest evidence's path: what a suppression's path scope is matched against

    @property
    def summary(self) -> str:
        """The plain sentence for the analyst."""
        return self.sentence()


class Rule(Protocol):
    """One detection rule."""

    name: str

    @property
    def kinds(self) -> frozenset[str]:
        """The event kinds this rule looks at (the engine hands it no others)."""
        ...

    def key(self, e: StoredEvent) -> str | None:
        """The state this event belongs to, or None if the rule does not look at it."""
        ...

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        """Looks at one event, updating the state in place; returns evidence, if any."""
        ...


def _hm(ns: int, tz: Any) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, tz=tz).strftime("%H:%M")


def _tz(name: str) -> Any:
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        import datetime as dt

        return dt.timezone(dt.timedelta(hours=8), "CST")


def _episode(state: State, t: int, gap_ns: int) -> int:
    """The start of the episode an event at t belongs to; starts a new one after a quiet gap."""
    last = state.get("ep_last")
    if last is None or t - last > gap_ns or t < state.get("ep", t):
        state["ep"] = t
        state["ep_n"] = 0
    state["ep_last"] = max(t, last or t)
    state["ep_n"] = state.get("ep_n", 0) + 1
    return int(state["ep"])


def _said(text: str) -> Callable[[], str]:
    """A sentence already made (rules whose evidence is rare make theirs at once)."""
    return lambda: text


def _reader(e: StoredEvent) -> str | None:
    """The key of the rules that follow one user's reads."""
    return e.user if e.kind in _READ_KINDS and e.user else None


_FOLDERS: dict[int, dict[str, str]] = {}  # depth -> path -> folder: paths repeat (the same files are read again)


def _folder(path: str, depth: int) -> str:
    made = _FOLDERS.get(depth)
    if made is None:
        made = _FOLDERS[depth] = {}
    found = made.get(path)  # a path's hash is kept in the string: no tuple to build and hash per event
    if found is None:
        parts = [p for p in path.split("/") if p]
        found = "/" + "/".join(parts[:depth]) if parts else "/"
        if len(made) >= 50_000:
            made.clear()
        made[path] = found
    return found


@dataclass
class ReadBurst:
    """More than ``threshold`` reads by one user within a window (the rule since the first release)."""

    threshold: int
    window_ns: int
    severity: str
    tz: Any
    name: str = "read_burst"
    kinds: frozenset[str] = _READ_KINDS

    def key(self, e: StoredEvent) -> str | None:
        return _reader(e)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        times: list[int] = state.setdefault("t", [])  # every read in the window, sorted
        pending: list[list[Any]] = state.setdefault("p", [])  # [time, id] not yet evidence, in arrival order
        bisect.insort(times, e.time_ns)
        cut_at = times[-1] - self.window_ns
        cut = bisect.bisect_left(times, cut_at)
        if cut:
            del times[:cut]
        pending.append([e.time_ns, e.id])
        if len(times) <= self.threshold:
            if len(pending) > 2 * self.threshold + 8:  # reads that left the window unreported never join one
                pending[:] = [p for p in pending if p[0] >= cut_at]
            return None
        # every read in a window holding more than threshold reads is part of the burst: the window's
        # reads not reported yet are evidence now (each is reported once, so this is amortised O(1))
        new = [p[1] for p in pending if p[0] >= cut_at]
        pending.clear()
        if not new:
            return None
        first = times[0]
        last_member = state.get("m_last")
        if last_member is None or first - last_member > self.window_ns:
            state["m_ep"], state["m_n"] = first, 0
        state["m_last"] = max(times[-1], last_member or 0)
        state["m_n"] = state.get("m_n", 0) + len(new)
        ep, last, count, user = int(state["m_ep"]), int(state["m_last"]), state["m_n"], e.user
        return Finding(self.name, self.severity, f"{self.name}|{user}|{ep}", user, e.agent_id, new, ep, last,
                       lambda: f"{user} read sensitive files {count} times between {_hm(ep, self.tz)} and "
                               f"{_hm(last, self.tz)}, in bursts of more than {self.threshold} within "
                               f"{self.window_ns / MINUTE_NS:g} min", e.path)


@dataclass
class UsbExfiltration:
    """Sensitive content written to removable media. A device the policy lists as company-issued
    (``company_device`` on the event, set by the agent from vendor, product and serial) is still
    recorded and alerted, at ``company_severity``, in episodes of its own."""

    gap_ns: int
    severity: str
    tz: Any
    company_severity: str = "low"
    name: str = "usb_exfiltration"
    kinds: frozenset[str] = frozenset({"usb.write"})

    def key(self, e: StoredEvent) -> str | None:
        if e.kind != "usb.write" or not (e.attributes.get("match") or e.attributes.get("source_paths")):
            return None
        who = e.user or e.agent_id
        return f"{who}|company" if e.attributes.get("company_device") is True else who

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        ep = _episode(state, e.time_ns, self.gap_ns)
        company = e.attributes.get("company_device") is True
        device = e.attributes.get("device") or e.attributes.get("mountpoint") or "removable media"
        if company:
            device = f"company-issued {device}"
        who = e.user or f"agent {e.agent_id}"
        return Finding(self.name, self.company_severity if company else self.severity,
                       f"{self.name}|{who}{'|company' if company else ''}|{ep}", e.user, e.agent_id, [e.id], ep,
                       int(state["ep_last"]), _said(
                           f"{who} wrote {state['ep_n']} file(s) with sensitive content to {device} between "
                           f"{_hm(ep, self.tz)} and {_hm(int(state['ep_last']), self.tz)}; latest {e.path} "
                           f"(from {', '.join([str(x) for x in e.attributes.get('source_paths') or []][:3])})"), e.path)


@dataclass
class SensitiveCopyOut:
    """Sensitive content copied, moved or archived out of the sensitive folders."""

    gap_ns: int
    severity: str
    sync_folders: tuple[str, ...]
    tz: Any
    name: str = "sensitive_copy_out"
    kinds: frozenset[str] = frozenset({"file.copy", "file.move"})
    _sync: Any = field(init=False, repr=False, compare=False)

    def key(self, e: StoredEvent) -> str | None:
        if e.kind == "file.copy" or (e.kind == "file.move" and e.attributes.get("moved_out")):
            return e.user or e.agent_id
        return None

    def __post_init__(self) -> None:
        # one regular expression for all the patterns: a copy is matched once, not once per sync folder
        self._sync = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.sync_folders) or "(?!)")

    def _sync_folder(self, where: str) -> str | None:
        """The first pattern of ``sync_folders`` the destination matches (fnmatch's rules), if any."""
        if self._sync.match(where) is None:
            return None
        return next((p for p in self.sync_folders if fnmatch.fnmatch(where, p)), None)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        ep = _episode(state, e.time_ns, self.gap_ns)
        where = e.dest_path or e.path
        sync = self._sync_folder(where)
        how = {"file.move": "moved", "file.copy": "copied"}[e.kind]
        if e.attributes.get("archive_members"):
            how = "archived"
        note = f" into a sync folder ({sync})" if sync else ""
        who = e.user or f"agent {e.agent_id}"
        state["sync"] = bool(state.get("sync")) or bool(sync)
        count, last, tz = state["ep_n"], int(state["ep_last"]), self.tz
        return Finding(self.name, self.severity, f"{self.name}|{who}|{ep}", e.user, e.agent_id, [e.id], ep, last,
                       lambda: f"{who} {how} sensitive content out of the sensitive folders {count} time(s) between "
                               f"{_hm(ep, tz)} and {_hm(last, tz)}; latest {where}{note}", where)


@dataclass
class BulkRead:
    """An hour with more reads than both a floor and the user's own baseline (mean + sigmas x deviation)."""

    floor: int
    sigmas: float
    alpha: float  # weight of one hour in the running baseline (1 / hours of baseline)
    cold_start_hours: int
    cold_start_factor: float
    severity: str
    tz: Any
    name: str = "bulk_read"
    kinds: frozenset[str] = _READ_KINDS

    def key(self, e: StoredEvent) -> str | None:
        return _reader(e)

    def limit(self, state: State) -> float:
        """Reads in an hour above which the hour is unusual for this user."""
        if state.get("hours", 0) < self.cold_start_hours:
            return self.floor * self.cold_start_factor
        mean = float(state.get("mean", 0.0))
        # counts of independent reads spread at least like a Poisson count: a steady user is not
        # alerted on for one hour a little above an average with no variance yet
        spread = max(math.sqrt(state.get("var", 0.0)), math.sqrt(mean))
        return max(float(self.floor), mean + self.sigmas * spread)

    def _close_hours(self, state: State, upto: int) -> None:
        hour = state.get("h")
        if hour is None or upto <= hour:
            return
        for n in [state.get("c", 0)] + [0] * min(upto - hour - 1, int(3 / self.alpha)):  # quiet hours: 0 (bounded)
            # an average of all hours seen until the baseline's length, then a moving one over that length
            a = max(self.alpha, 1.0 / (state.get("hours", 0) + 1))
            mean = state.get("mean", 0.0)
            diff = n - mean
            state["mean"] = mean + a * diff
            state["var"] = (1 - a) * (state.get("var", 0.0) + a * diff * diff)
            state["hours"] = state.get("hours", 0) + 1
        state["c"], state["ids"], state["fired"] = 0, [], False

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        hour = e.time_ns // HOUR_NS
        if state.get("h") is None:
            state["h"] = hour
        if hour < state["h"]:
            return None  # an event from an hour already closed: counted there, never re-opened
        self._close_hours(state, hour)
        state["h"] = hour
        state["c"] = state.get("c", 0) + 1
        limit = self.limit(state)
        ids: list[str] = state.setdefault("ids", [])
        folders: dict[str, int] = state.setdefault("dirs", {})
        top = _folder(e.path, 2)
        folders[top] = folders.get(top, 0) + 1
        if len(folders) > 8:  # keep only the busiest few, for the sentence
            for k in sorted(folders, key=folders.__getitem__)[:-8]:
                del folders[k]
        if not state.get("fired"):
            ids.append(e.id)
            if state["c"] <= limit:
                return None
            state["fired"], state["first"] = True, e.time_ns
            new, ids[:] = list(ids), []
        else:
            new = [e.id]
        where = max(folders, key=folders.__getitem__)
        usual = "no baseline yet" if state.get("hours", 0) < max(1, self.cold_start_hours) else (
            f"their usual is {state.get('mean', 0.0):.0f} an hour")
        start, now, count, user = hour * HOUR_NS, e.time_ns, state["c"], e.user
        return Finding(self.name, self.severity, f"{self.name}|{user}|{start}", user, e.agent_id, new, start, now,
                       lambda: f"{user} read {count} files, most in {where}, between {_hm(start, self.tz)} and "
                               f"{_hm(now, self.tz)}; {usual}", where)


@dataclass
class FirstAccess:
    """A user reading a sensitive folder they never touched before, once the learning period is over."""

    learning_ns: int
    depth: int
    max_folders: int
    gap_ns: int
    severity: str
    tz: Any
    name: str = "first_access"
    kinds: frozenset[str] = _READ_KINDS

    def key(self, e: StoredEvent) -> str | None:
        return _reader(e)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        since = state.setdefault("since", e.time_ns)
        seen: dict[str, int] = state.setdefault("seen", {})
        folder = _folder(e.path, self.depth)
        if folder in seen:
            return None
        if len(seen) >= self.max_folders:
            state["full"] = True  # bounded: a user touching this many folders is no longer "new" anywhere
            return None
        seen[folder] = e.time_ns
        if e.time_ns - since < self.learning_ns:
            return None
        ep = _episode(state, e.time_ns, self.gap_ns)
        return Finding(self.name, self.severity, f"{self.name}|{e.user}|{ep}", e.user, e.agent_id, [e.id], ep,
                       e.time_ns, _said(f"{e.user} read in {folder} for the first time (at {_hm(e.time_ns, self.tz)}); "
                       f"{state['ep_n']} new folder(s) since {_hm(ep, self.tz)}"), folder)


@dataclass
class AfterHours:
    """Access to sensitive files outside the user's working calendar."""

    is_working: Callable[[str, int], bool]
    describe: Callable[[str, int], str]
    min_events: int
    gap_ns: int
    severity: str
    name: str = "after_hours"
    kinds: frozenset[str] = _ACCESS_KINDS
    # (user, minute since the epoch) -> working: calendars are in whole minutes of zones whose offsets
    # are whole minutes, so one answer holds for the whole minute
    _working: dict[tuple[str, int], bool] = field(default_factory=dict, repr=False)

    def key(self, e: StoredEvent) -> str | None:
        return e.user if e.kind in _ACCESS_KINDS and e.user else None

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        at = (e.user, e.time_ns // MINUTE_NS)
        working = self._working.get(at)
        if working is None:
            if len(self._working) >= 100_000:
                self._working.clear()
            working = self._working[at] = self.is_working(e.user, e.time_ns)
        if working:
            return None
        ep = _episode(state, e.time_ns, self.gap_ns)
        pending: list[str] = state.setdefault("pending", [])
        if state.get("pending_ep") != ep:
            state["pending_ep"], pending[:] = ep, []
        pending.append(e.id)
        if len(pending) < self.min_events:
            return None
        new, pending[:] = list(pending), []
        state["pending"] = pending
        user, now, count, describe = e.user, e.time_ns, state["ep_n"], self.describe
        return Finding(self.name, self.severity, f"{self.name}|{user}|{ep}", user, e.agent_id, new, ep, now,
                       lambda: f"{user} accessed sensitive files {count} times outside working hours, from "
                               f"{describe(user, ep)} to {describe(user, now)}", e.path)


@dataclass
class DeliveryRule:
    """An agent's own report that evidence may be missing: a capture gap or a full spool."""

    name: str
    kind: str
    severity: str
    sentence: str
    gap_ns: int

    @property
    def kinds(self) -> frozenset[str]:
        """The event kinds this rule looks at."""
        return frozenset({self.kind})

    def key(self, e: StoredEvent) -> str | None:
        return e.agent_id if e.kind == self.kind else None

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        ep = _episode(state, e.time_ns, self.gap_ns)
        detail = ", ".join(f"{k}={v}" for k, v in sorted(e.attributes.items()) if not isinstance(v, (dict, list)))
        return Finding(self.name, self.severity, f"{self.name}|{e.agent_id}|{ep}", e.user, e.agent_id, [e.id], ep,
                       e.time_ns, _said(f"agent {e.agent_id}: {self.sentence} ({state['ep_n']} report(s)); {detail}"))


def _working_calendar(rules: RuleSet) -> tuple[Callable[[str, int], bool], Callable[[str, int], str]]:
    from collector.detection.config import working_calendar  # reads the customer's holiday file, if any

    calendar = working_calendar(rules.after_hours)
    return calendar.is_working_time, calendar.describe


def build_rules(rules: RuleSet) -> list[Rule]:
    """The enabled built-in rules, configured."""
    tz = _tz(rules.after_hours.timezone)
    out: list[Rule] = []
    r = rules.read_burst
    if r.enabled:
        out.append(ReadBurst(r.threshold, int(r.window_minutes * MINUTE_NS), r.severity, tz))
    b = rules.bulk_read
    if b.enabled:
        out.append(BulkRead(b.floor_per_hour, b.sigmas, 1.0 / (24 * b.baseline_days), b.cold_start_hours,
                            b.cold_start_factor, b.severity, tz))
    u = rules.usb_exfiltration
    if u.enabled:
        out.append(UsbExfiltration(int(u.group_minutes * MINUTE_NS), u.severity, tz, u.company_device_severity))
    c = rules.sensitive_copy_out
    if c.enabled:
        out.append(SensitiveCopyOut(int(c.group_minutes * MINUTE_NS), c.severity, c.sync_folders, tz))
    f = rules.first_access
    if f.enabled:
        out.append(FirstAccess(int(f.learning_days * DAY_NS), f.folder_depth, f.max_folders_per_user,
                               int(f.group_minutes * MINUTE_NS), f.severity, tz))
    a = rules.after_hours
    if a.enabled:
        working, describe = _working_calendar(rules)
        out.append(AfterHours(working, describe, a.min_events, int(a.group_minutes * MINUTE_NS), a.severity))
    out.append(DeliveryRule("capture_gap", "agent.capture_gap", "medium",
                            "the operating system or the agent dropped events; the evidence has a gap", HOUR_NS))
    out.append(DeliveryRule("spool_loss", "agent.spool_full", "high",
                            "its spool was full and refused events", HOUR_NS))
    return out


@dataclass
class Engine:
    """Runs every rule over a sequence of events, with the states of the keys they touch."""

    rules: Sequence[Rule]
    steps: int = field(default=0)
    _by_kind: dict[str, list[Rule]] = field(default_factory=dict, init=False, repr=False)
    # kind -> (name, key, step) of the rules that look at it, the methods bound once
    _calls: dict[str, tuple[tuple[str, Callable[[StoredEvent], str | None],
                                  Callable[[State, StoredEvent], Finding | None]], ...]] = field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            for kind in rule.kinds:
                self._by_kind.setdefault(kind, []).append(rule)
        self._calls = {kind: tuple((r.name, r.key, r.step) for r in rules) for kind, rules in self._by_kind.items()}

    def keys(self, events: Iterable[StoredEvent]) -> set[tuple[str, str]]:
        """The (rule, key) states these events need."""
        out = set()
        calls, none = self._calls, ()
        for e in events:
            for name, key, _step in calls.get(e.kind, none):
                k = key(e)
                if k is not None:
                    out.add((name, k))
        return out

    def run(self, states: dict[tuple[str, str], State], events: Iterable[StoredEvent]) -> list[Finding]:
        """Looks at each event once; updates ``states`` in place; returns findings merged per group."""
        merged: dict[str, Finding] = {}
        calls, none = self._calls, ()
        steps = 0
        for e in events:
            for name, key, step in calls.get(e.kind, none):
                k = key(e)
                if k is None:
                    continue
                steps += 1
                state = states.get((name, k))
                if state is None:
                    state = states[(name, k)] = {}
                found = step(state, e)
                if found is None:
                    continue
                have = merged.get(found.group_key)
                if have is None:
                    merged[found.group_key] = found
                else:
                    have.event_ids.extend(found.event_ids)
                    have.last_ns, have.sentence, have.path = max(have.last_ns, found.last_ns), found.sentence, found.path
        self.steps += steps
        return list(merged.values())
