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

    # A rule may also have ``keyed_by``: its key for an event of its own ``kinds`` (the engine hands it
    # no others, so the kind need not be checked again). Rules next to each other with the same
    # ``keyed_by`` are keyed once an event: the four rules on a user's reads share ``_user``.

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


def _user(e: StoredEvent) -> str | None:
    """The key of the rules that follow one user, for an event of the rule's kinds (``keyed_by``)."""
    return e.user or None


_FOLDERS: dict[int, dict[str, str]] = {}  # depth -> path -> folder: paths repeat (the same files are read again)


def _folders(depth: int) -> dict[str, str]:
    """The folders of paths at this depth, made so far (a rule keeps the dict and looks a path up itself)."""
    made = _FOLDERS.get(depth)
    if made is None:
        made = _FOLDERS[depth] = {}
    return made


def _folder(path: str, depth: int) -> str:
    made = _folders(depth)
    found = made.get(path)  # a path's hash is kept in the string: no tuple to build and hash per event
    if found is None:
        head = path.split("/", depth + 1)  # the first components only: the file's name and more stay whole
        parts = head[1:depth + 1] if head[0] == "" else head[:depth]
        if len(parts) < depth or not all(parts):  # short, or "//" among them: every component, the empty left out
            parts = [p for p in path.split("/") if p][:depth]
        found = "/" + "/".join(parts) if parts else "/"
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
    keyed_by = staticmethod(_user)

    def key(self, e: StoredEvent) -> str | None:
        return _reader(e)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        t = e.time_ns
        times: list[int] | None = state.get("t")  # every read in the window, sorted
        if times is None:
            times = state["t"] = []
        pending: list[list[Any]] | None = state.get("p")  # [time, id] not yet evidence, in arrival order
        if pending is None:
            pending = state["p"] = []
        if not times or t >= times[-1]:
            times.append(t)  # in order, as reads mostly come: where insort would put it
        else:
            bisect.insort(times, t)
        cut_at = times[-1] - self.window_ns
        cut = bisect.bisect_left(times, cut_at)
        if cut:
            del times[:cut]
        pending.append([t, e.id])
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


def _literal(pattern: str) -> str:
    """The longest run of plain characters in a glob, read as fnmatch.translate reads it (``*``, ``?``
    and a closed ``[...]`` end a run): every string the pattern matches holds it."""
    runs, run, i, n = [], "", 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c in "*?":
            runs.append(run)
            run = ""
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                run += c  # never closed: a plain "["
            else:
                runs.append(run)
                run, i = "", j + 1
        else:
            run += c
    runs.append(run)
    return max(runs, key=len)


_HOW = {"file.move": "moved", "file.copy": "copied"}


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
    _needles: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def key(self, e: StoredEvent) -> str | None:
        if e.kind == "file.copy" or (e.kind == "file.move" and e.attributes.get("moved_out")):
            return e.user or e.agent_id
        return None

    def __post_init__(self) -> None:
        # one regular expression for all the patterns: a copy is matched once, not once per sync folder
        self._sync = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.sync_folders) or "(?!)")
        # what each pattern's matches hold ("/Nutstore/"): a destination holding none is in no sync folder,
        # found without running the expression (its ".*" alternatives backtrack along the whole path)
        self._needles = tuple(_literal(p) for p in self.sync_folders)

    def _sync_folder(self, where: str) -> str | None:
        """The first pattern of ``sync_folders`` the destination matches (fnmatch's rules), if any."""
        if all(needle and needle not in where for needle in self._needles) or self._sync.match(where) is None:
            return None
        return next((p for p in self.sync_folders if fnmatch.fnmatch(where, p)), None)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        ep = _episode(state, e.time_ns, self.gap_ns)
        where = e.dest_path or e.path
        sync = self._sync_folder(where)
        how, attributes = _HOW[e.kind], e.attributes  # "archived" is looked up for the sentence alone
        note = f" into a sync folder ({sync})" if sync else ""
        who = e.user or f"agent {e.agent_id}"
        state["sync"] = bool(state.get("sync")) or bool(sync)
        count, last, tz = state["ep_n"], int(state["ep_last"]), self.tz
        return Finding(self.name, self.severity, f"{self.name}|{who}|{ep}", e.user, e.agent_id, [e.id], ep, last,
                       lambda: f"{who} {'archived' if attributes.get('archive_members') else how} sensitive content "
                               f"out of the sensitive folders {count} time(s) between {_hm(ep, tz)} and {_hm(last, tz)}; "
                               f"latest {where}{note}", where)


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
    keyed_by = staticmethod(_user)
    _tops: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._tops = _folders(2)

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
        at = state.get("h")
        if at is None:
            at = state["h"] = hour
        if hour < at:
            return None  # an event from an hour already closed: counted there, never re-opened
        if hour > at:
            self._close_hours(state, hour)
        state["h"] = hour
        count = state["c"] = state.get("c", 0) + 1
        ids: list[str] | None = state.get("ids")
        if ids is None:
            ids = state["ids"] = []
        folders: dict[str, int] | None = state.get("dirs")
        if folders is None:
            folders = state["dirs"] = {}
        path = e.path
        top = self._tops.get(path) or _folder(path, 2)
        folders[top] = folders.get(top, 0) + 1
        if len(folders) > 8:  # keep only the busiest few, for the sentence
            for k in sorted(folders, key=folders.__getitem__)[:-8]:
                del folders[k]
        if not state.get("fired"):
            ids.append(e.id)
            if count <= self.limit(state):  # the limit moves only when an hour closes, above
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
    keyed_by = staticmethod(_user)
    _made: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._made = _folders(self.depth)

    def key(self, e: StoredEvent) -> str | None:
        return _reader(e)

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        since = state.get("since")
        if since is None:
            since = state["since"] = e.time_ns
        seen: dict[str, int] | None = state.get("seen")
        if seen is None:
            seen = state["seen"] = {}
        path = e.path
        folder = self._made.get(path) or _folder(path, self.depth)
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
    keyed_by = staticmethod(_user)

    def key(self, e: StoredEvent) -> str | None:
        return e.user if e.kind in _ACCESS_KINDS and e.user else None

    def step(self, state: State, e: StoredEvent) -> Finding | None:
        if self.is_working(e.user, e.time_ns):  # the calendar keeps its answers by minute (calendar.py)
            return None
        ep = _episode(state, e.time_ns, self.gap_ns)
        pending: list[str] | None = state.get("pending")
        if pending is None:
            pending = state["pending"] = []
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


_Step = Callable[[State, StoredEvent], "Finding | None"]
_Key = Callable[[StoredEvent], "str | None"]


def _keyed_by(rule: Rule) -> _Key:
    found: _Key = getattr(rule, "keyed_by", rule.key)
    return found


def _grouped(rules: Sequence[Rule]) -> tuple[tuple[_Key, tuple[Rule, ...]], ...]:
    """The rules of one kind, in order, cut where the key function changes: adjacent rules keyed alike
    are keyed once an event, and the rules still step in their order (so the findings come in it too)."""
    out: list[tuple[_Key, list[Rule]]] = []
    for rule in rules:
        by = _keyed_by(rule)
        if out and out[-1][0] is by:
            out[-1][1].append(rule)
        else:
            out.append((by, [rule]))
    return tuple((by, tuple(group)) for by, group in out)


@dataclass
class Engine:
    """Runs every rule over a sequence of events, with the states of the keys they touch.

    An event is keyed once for each run of rules sharing a key function (``_grouped``), and each rule
    finds its state by key in a dict of its own during a run: the (rule, key) tuple of ``states`` is
    built once a key and run, not once an event and rule."""

    rules: Sequence[Rule]
    steps: int = field(default=0)
    _by_kind: dict[str, list[Rule]] = field(default_factory=dict, init=False, repr=False)
    # kind -> ((key function, rules keyed by it), ...): see _grouped
    _groups: dict[str, tuple[tuple[_Key, tuple[Rule, ...]], ...]] = field(default_factory=dict, init=False,
                                                                          repr=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            for kind in rule.kinds:
                self._by_kind.setdefault(kind, []).append(rule)
        self._groups = {kind: _grouped(rules) for kind, rules in self._by_kind.items()}

    def keys(self, events: Iterable[StoredEvent]) -> set[tuple[str, str]]:
        """The (rule, key) states these events need."""
        found: dict[tuple[str, ...], set[str]] = {}  # the names of a group -> the keys its events gave
        plan = {kind: tuple((by, found.setdefault(tuple(r.name for r in rules), set()).add) for by, rules in groups)
                for kind, groups in self._groups.items()}
        none = ()
        for e in events:
            for by, add in plan.get(e.kind, none):
                k = by(e)
                if k is not None:
                    add(k)
        return {(name, k) for names, ks in found.items() for name in names for k in ks}

    def run(self, states: dict[tuple[str, str], State], events: Iterable[StoredEvent]) -> list[Finding]:
        """Looks at each event once; updates ``states`` in place; returns findings merged per group."""
        merged: dict[str, Finding] = {}
        mine: dict[str, dict[str, State]] = {r.name: {} for r in self.rules}  # rule -> key -> its state in states
        plan = {kind: tuple((by, len(rules), tuple((mine[r.name], r.name, r.step) for r in rules))
                            for by, rules in groups) for kind, groups in self._groups.items()}
        none = ()
        steps = 0
        for e in events:
            for by, n, rules in plan.get(e.kind, none):
                k = by(e)
                if k is None:
                    continue
                steps += n
                for held, name, step in rules:
                    state = held.get(k)
                    if state is None:
                        state = states.get((name, k))
                        if state is None:
                            state = states[(name, k)] = {}
                        held[k] = state
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
