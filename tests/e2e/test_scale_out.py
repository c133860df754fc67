"""Issue 8, scale out, with real processes on loopback: two collectors on one PostgreSQL, one agent.

Two `shoumi-collector serve` processes share one fresh PostgreSQL schema and one trust root: the
second collector's data directory holds copies of the first's CA (pki/ca.pem, pki/ca.key; each
collector issues its own server certificate from it) and tree-head key (tree-head.key). One agent,
enrolled once at the first collector, runs with both addresses (`--collector A,B`) and watches a
folder in which the test reads a distinct file every few milliseconds: one user's steady burst of
reads, far above the read-burst threshold, so it is one incident.

Mid-stream the collector holding the agent's stream is killed with SIGKILL; the agent moves to the
other one. Later the killed collector is started again on the same database, the survivor is
stopped, the agent moves back and the burst goes on. At the end:

- every event the agent assigned a seq to is stored exactly once: (agent, epoch, seq) unique,
  seqs 1..N without a gap, N the spool's own count, nothing left in the spool;
- every read the test made is stored once, and the chain of batches is continuous (each batch
  starts after the previous one and names its hash; `shoumi-collector verify` agrees);
- the burst raised exactly one `read_burst` alert, holding every read, although both collectors
  ran detection over it (the survivor after the kill, the restarted collector at the end): the
  restarted collector extended it and raised nothing anew.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import PG_DSN
from tests.e2e.conftest import Collector, eventually, run, stop, tool
from tests.e2e.test_crash import _spool_state

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER = "scale-out"
THRESHOLD = 20  # the default: more than 20 reads by one user within 5 minutes is a burst
FIRST, SECOND = 300, 80  # reads before the restart of the killed collector, and after it
KILL_AT = 100  # stored reads before the kill


class PgCollector(Collector):
    """A collector process on the shared PostgreSQL schema."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        super().__init__(data_dir)
        self.database_url = database_url

    def launch(self, grpc_listen: str = "127.0.0.1:0") -> "PgCollector":
        """Starts the process without waiting for it (ready() waits): other work goes on meanwhile."""
        (self.data_dir / "collector.addr.json").unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [tool("shoumi-collector"), "serve", "--data-dir", str(self.data_dir), "--database-url", self.database_url,
                 "--grpc-listen", grpc_listen, "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                 "--read-burst-threshold", str(THRESHOLD)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def ready(self) -> "PgCollector":
        addr = self.data_dir / "collector.addr.json"
        proc = self.proc
        assert proc is not None
        eventually(lambda: addr.exists() or proc.poll() is not None, timeout=30, what="collector start")
        assert proc.poll() is None, self.log.read_text()
        info = json.loads(addr.read_text())
        self.grpc, self.http = info["grpc"], info["http"]
        self.enroll, self.fingerprint = info["enroll"], info["ca_fingerprint"]
        return self

    def start(self, *extra: str, grpc_listen: str = "127.0.0.1:0") -> "PgCollector":
        assert not extra
        return self.launch(grpc_listen).ready()

    def cli(self, *args: str, stdin: str | None = None) -> str:
        return run(tool("shoumi-collector"), *args, "--data-dir", str(self.data_dir),
                   "--database-url", self.database_url, stdin=stdin).stdout.strip()

    metrics_token = ""  # an IT account's: /metrics is for IT and auditors

    def metrics(self) -> str:
        if not self.metrics_token:
            name = f"it-{secrets.token_hex(4)}"  # an account of its own for each collector, on any database
            self.cli("user", "create", "--username", name, "--role", "it_admin", "--password-stdin",
                     stdin="a long enough password\n")
            self.metrics_token = self.cli("api-token", "create", "--username", name)
        req = urllib.request.Request(self.http + "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"})
        with urllib.request.urlopen(req, timeout=2) as reply:
            return str(reply.read().decode())

    def streams(self) -> int:
        """Agent streams open on this collector (its /metrics), -1 when it does not answer."""
        try:
            text = self.metrics()
        except OSError:
            return -1
        found = re.search(r"^shoumi_agent_streams (\d+)$", text, re.M)
        return int(found.group(1)) if found else -1

    def counter(self, what: str) -> int:
        text = self.metrics()
        found = re.search(rf'^shoumi_ingest_total{{what="{re.escape(what)}"}} (\d+)$', text, re.M)
        return int(found.group(1)) if found else 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, Any]]:
    """A fresh schema on the test server: (collector URL with it as search path, a connection to it)."""
    if not PG_DSN:
        pytest.skip("no PostgreSQL server: set SHOUMI_TEST_PG_DSN")
    import psycopg

    schema = f"t_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    url = f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    conn = psycopg.connect(PG_DSN, autocommit=True, options=f"-csearch_path={schema}")
    try:
        yield url, conn
    finally:
        conn.close()
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Db:
    """Read-only questions to the shared schema, each its own statement (autocommit)."""

    def __init__(self, conn: Any, agent_id: str) -> None:
        self.conn = conn
        self.agent_id = agent_id

    def one(self, sql: str, *args: Any) -> Any:
        return self.conn.execute(sql, args).fetchone()[0]

    def all(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, args).fetchall())

    def reads(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.all(
            "SELECT event_id, path FROM events WHERE agent_id = %s AND kind = 'file.read' AND user_name = %s",
            self.agent_id, USER)]

    def read_count(self, paths: set[str]) -> int:
        return sum(1 for _, p in self.reads() if p in paths)

    def max_seq(self) -> int:
        return int(self.one("SELECT coalesce(max(seq), 0) FROM events WHERE agent_id = %s", self.agent_id))

    def detected_upto(self) -> int:
        row = self.all("SELECT detected_seq FROM chain_heads WHERE agent_id = %s", self.agent_id)
        return int(row[0][0]) if row else 0

    def indexed(self, n: int) -> bool:
        for (attrs,) in self.all("SELECT attributes FROM events WHERE agent_id = %s AND kind = 'agent.heartbeat'",
                                 self.agent_id):
            values = json.loads(attrs) if isinstance(attrs, str) else attrs
            if int(values.get("index_files", 0)) >= n:
                return True
        return False

    def alerts(self, rule: str | None = None) -> list[tuple[int, str, str, list[str], str]]:
        rows = self.all("SELECT id, rule, status, user_name FROM alerts ORDER BY id")
        evidence: dict[int, list[str]] = {}
        for alert_id, event_id in self.all("SELECT alert_id, event_id FROM alert_evidence ORDER BY alert_id, n"):
            evidence.setdefault(int(alert_id), []).append(event_id)  # evidence is appended there, in order
        out = [(int(r[0]), r[1], r[2], evidence.get(int(r[0]), []), r[3]) for r in rows]
        return [a for a in out if rule is None or a[1] == rule]


class Reader:
    """Reads files of the watched folder, one every `pause_s`, in the background: the user's burst."""

    def __init__(self, paths: list[Path], pause_s: float) -> None:
        self.paths = paths
        self.pause_s = pause_s
        self.done = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for path in self.paths:
                with open(path, "rb") as f:
                    f.read()
                self.done += 1
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> "Reader":
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the reader did not finish"
        assert self.error is None, self.error


def _agent(root: Path, state: Path, watch: Path, collectors: str) -> subprocess.Popen[bytes]:
    with open(root / "agent.log", "ab") as log:
        return subprocess.Popen(
            [tool("shoumi-agent"), "run", "--state-dir", str(state), "--watch", str(watch), "--capture", "inotify",
             "--collector", collectors, "--attributed-user", USER, "--heartbeat-seconds", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )


def _enroll(collector: PgCollector, state: Path) -> str:
    """Enrolls the agent at the collector's enrollment listener with the pinned CA, as IT does; the
    one-time token is made by the collector's own code in this process (a CLI start costs seconds here)."""
    from collector.enrollment.service import EnrollmentService
    from collector.storage import open_store

    store = open_store(collector.database_url)
    try:
        with store.transaction() as tx:
            token = EnrollmentService(token_ttl_ns=3600 * 10**9).create_token(tx=tx, actor="test:scale-out")
    finally:
        store.close()
    return run(tool("shoumi-agent"), "enroll", "--collector", collector.enroll, "--token", token,
               "--ca-fingerprint", collector.fingerprint, "--state-dir", str(state)).stdout.strip()


def _chain_gaps(db: Db) -> list[str]:
    """Breaks in the stored chain of batches: a batch not starting after its predecessor or not naming it."""
    rows = db.all("SELECT epoch, first_seq, last_seq, batch_hash, prev_hash FROM batches WHERE agent_id = %s "
                  "ORDER BY epoch, first_seq", db.agent_id)
    gaps = []
    prev_last, prev_hash = 0, None
    for epoch, first, last, digest, prev in rows:
        if epoch != 1 or first != prev_last + 1 or (prev_hash is not None and bytes(prev) != bytes(prev_hash)):
            gaps.append(f"batch epoch={epoch} {first}..{last} after ..{prev_last}")
        prev_last, prev_hash = last, digest
    return gaps


def test_two_collectors_one_postgres_agent_switches_on_kill9_exactly_once_one_alert(
        tmp_path: Path, pg_schema: tuple[str, Any]) -> None:
    url, conn = pg_schema
    started = time.monotonic()
    fig: dict[str, Any] = {}
    watch = tmp_path / "finance"
    watch.mkdir()
    paths = [watch / f"ledger-{i:04d}.xlsx" for i in range(FIRST + SECOND)]
    for i, p in enumerate(paths):
        p.write_bytes(f"row {i}\n".encode() * 4)
    first_paths = {str(p) for p in paths[:FIRST]}
    second_paths = {str(p) for p in paths[FIRST:]}

    one = PgCollector(tmp_path / "collector-1", url)
    two = PgCollector(tmp_path / "collector-2", url)
    agent: subprocess.Popen[bytes] | None = None
    with contextlib.ExitStack() as cleanup:
        @cleanup.callback
        def _down() -> None:  # whatever happened: nothing of ours keeps running
            for proc in (agent, one.proc, two.proc):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)

        # --- two collectors, one database, one trust root --------------------------------------
        one.start()
        (two.data_dir / "pki").mkdir(parents=True, mode=0o700)
        for name in ("pki/ca.pem", "pki/ca.key", "tree-head.key"):
            shutil.copy2(one.data_dir / name, two.data_dir / name)
        two.launch()
        state = tmp_path / "agent"
        agent_id = _enroll(one, state)  # while collector 2 starts
        two.ready()
        assert two.fingerprint == one.fingerprint
        assert (two.data_dir / "pki" / "server.pem").read_bytes() != (one.data_dir / "pki" / "server.pem").read_bytes()
        db = Db(conn, agent_id)
        agent = _agent(tmp_path, state, watch, f"{one.grpc},{two.grpc}")
        eventually(lambda: db.indexed(len(paths)) or agent.poll() is not None, timeout=20,
                   what="the agent's first heartbeat with its index")
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        eventually(lambda: one.streams() == 1 and two.streams() == 0, timeout=10, what="the stream on collector 1")
        fig["setup_s"] = round(time.monotonic() - started, 1)

        # --- the burst; kill -9 the collector holding the stream mid-way ----------------------------
        reader = Reader(paths[:FIRST], pause_s=0.01).start()
        eventually(lambda: db.read_count(first_paths) >= KILL_AT, timeout=20, what=f"{KILL_AT} reads stored")
        fig["stored_by_1_before_kill"] = one.counter("events.stored")
        fig["alerts_before_kill"] = len(db.alerts("read_burst"))
        reads_at_kill = db.read_count(first_paths)
        killed = time.monotonic()
        one.kill()
        assert reader.done < FIRST, "the burst ended before the kill: nothing would be mid-stream"
        eventually(lambda: two.streams() == 1, timeout=10, what="the agent's stream on collector 2")
        eventually(lambda: db.read_count(first_paths) > reads_at_kill, timeout=10, what="reads stored through collector 2")
        fig["switch_s"] = round(time.monotonic() - killed, 2)
        fig["reads_at_kill"] = reads_at_kill
        reader.join(timeout=30)
        eventually(lambda: db.read_count(first_paths) >= FIRST, timeout=20, what="every read of the burst stored")
        fig["stored_by_2"] = two.counter("events.stored")
        fig["redelivered_to_2"] = two.counter("batches.duplicate")
        assert two.counter("events.stored") > 0
        # collector 2, alone now, runs detection over the rest of the burst: it extends the alert
        upto = db.max_seq()
        eventually(lambda: db.detected_upto() >= upto, timeout=15, what="collector 2's detection")
        burst = db.alerts("read_burst")
        assert len(burst) == 1 and len(burst[0][3]) == FIRST, [(a[1], len(a[3])) for a in burst]

        # --- the killed collector back on the same database; the survivor stops; the burst goes on ----
        one.launch(grpc_listen=one.grpc)  # the address the agent was given
        stopping = time.monotonic()
        assert two.stop() == 0  # while collector 1 starts again
        one.ready()
        eventually(lambda: one.streams() == 1, timeout=15, what="the agent's stream back on collector 1")
        fig["back_on_1_s"] = round(time.monotonic() - stopping, 1)
        Reader(paths[FIRST:], pause_s=0.01).start().join(timeout=30)
        eventually(lambda: db.read_count(second_paths) >= SECOND, timeout=20, what="the reads after the restart stored")
        last_read = db.max_seq()
        eventually(lambda: db.detected_upto() >= last_read, timeout=15, what="detection over every read")
        fig["stored_by_1_after_restart"] = one.counter("events.stored")

        # --- stop the agent (it drains), then the collector ---------------------------------------
        assert stop(agent) == 0
        assert one.stop() == 0

        # --- exactly once ----------------------------------------------------------------------------
        spool = _spool_state(state)
        dupes = db.all("SELECT epoch, seq, count(*) FROM events WHERE agent_id = %s GROUP BY epoch, seq "
                       "HAVING count(*) > 1", agent_id)
        seqs = [r[0] for r in db.all("SELECT seq FROM events WHERE agent_id = %s ORDER BY seq", agent_id)]
        fig.update(stored=len(seqs), spool_assigned=spool["next_seq"] - 1,
                   spool_left=spool["unsealed"] + spool["unacked_batches"],
                   epochs=[r[0] for r in db.all("SELECT DISTINCT epoch FROM events WHERE agent_id = %s", agent_id)])
        assert dupes == [], dupes
        assert seqs == list(range(1, len(seqs) + 1)), "a gap in the stored seqs"
        assert fig["stored"] == fig["spool_assigned"] and fig["spool_left"] == 0 and fig["epochs"] == [1], fig
        reads = db.reads()
        by_path: dict[str, int] = {}
        for _, read_path in reads:
            by_path[read_path] = by_path.get(read_path, 0) + 1
        assert {p: by_path.get(p, 0) for p in map(str, paths)} == {str(p): 1 for p in paths}, "a read lost or doubled"
        assert db.one("SELECT count(*) FROM events WHERE agent_id = %s", agent_id) == \
            db.one("SELECT count(DISTINCT event_id) FROM events WHERE agent_id = %s", agent_id)

        # --- the chain is continuous --------------------------------------------------------------------
        assert _chain_gaps(db) == []
        head = db.all("SELECT epoch, last_seq FROM chain_heads WHERE agent_id = %s", agent_id)
        assert head == [(1, len(seqs))], head
        verified = run(tool("shoumi-collector"), "verify", "--data-dir", str(one.data_dir), "--database-url", url,
                       check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # --- one incident, one alert ---------------------------------------------------------------------
        bursts = db.alerts("read_burst")
        fig["alerts"] = [(a[1], a[2], len(a[3])) for a in db.alerts()]
        assert len(bursts) == 1, fig["alerts"]
        _, _, status, event_ids, user = bursts[0]
        assert status == "open" and user == USER
        assert len(event_ids) == len(set(event_ids)) and set(event_ids) == {i for i, _ in reads}, \
            "the alert should hold every read of the burst, each once"
        refusals = [a for a in db.alerts() if a[1] in ("agent_tamper", "agent_malformed", "agent_epoch_reset")]
        assert refusals == [], refusals
        fig["total_s"] = round(time.monotonic() - started, 1)
        print(fig)


# --- alerts raised outside detection, by two collectors at once ---------------------------------------
# Detection is serialized by its advisory lock, so read_burst holds (above). The other alerts are raised
# by whichever collector sees the condition; these interleave two real stores' transactions on
# PostgreSQL the way two collectors can (they raised two alerts before liveness became a compare-and-set
# and the store kept one open alert per group).


def test_one_silence_seen_by_two_collectors_is_one_alert(pg_schema: tuple[str, Any]) -> None:
    from collector.fleet import service as fleet
    from collector.fleet.models import AgentRecord
    from collector.storage import open_store

    url, _ = pg_schema
    a, b = open_store(url), open_store(url)
    try:
        now = time.time_ns()
        with a.transaction() as tx:
            tx.add_enroll_token(token_hash="h" * 64, created_at_ns=now, expires_at_ns=now + 10**12, created_by="t")
            tx.consume_enroll_token(token_hash="h" * 64, agent=AgentRecord("agent-1", b"k" * 32, "host", "linux", "1", now),
                                    now_ns=now)
            tx.update_agent_liveness(agent_id="agent-1", liveness="active", last_seen_ns=now - 60 * 10**9,
                                     heartbeat_interval_s=1.0)
        raised: dict[str, int] = {}
        with a.transaction() as tx_a:  # collector 1's check, not yet committed...
            raised["a"] = len(fleet.check_silence(tx=tx_a, now_ns=time.time_ns()))

            def second() -> None:  # ...when collector 2's check lists the agent
                with b.transaction() as tx_b:
                    raised["b"] = len(fleet.check_silence(tx=tx_b, now_ns=time.time_ns()))

            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.5)  # collector 2 has listed the agent as active and waits on its row
        thread.join(timeout=10)
        assert not thread.is_alive()
        with a.read() as tx:
            counted = tx.count_alerts()
        assert counted == {"agent_silent": 1}, (counted, raised)
    finally:
        a.close()
        b.close()


def test_one_refusal_group_raised_by_two_collectors_is_one_alert(pg_schema: tuple[str, Any]) -> None:
    from collector.alerts.service import raise_alert
    from collector.storage import open_store

    url, _ = pg_schema
    a, b = open_store(url), open_store(url)
    try:
        group = "agent_tamper|agent-1|bad_signature"
        folded: list[int] = []
        with a.transaction() as tx_a:  # collector 1 files a refused batch of agent-1...
            raise_alert(tx=tx_a, rule="agent_tamper", severity="high", agent_id="agent-1", now_ns=time.time_ns(),
                        group_key=group, summary="refused on collector 1")

            def second() -> None:  # ...while collector 2 files another of its refused batches
                with b.transaction() as tx_b:
                    folded.append(raise_alert(tx=tx_b, rule="agent_tamper", severity="high", agent_id="agent-1",
                                              now_ns=time.time_ns(), group_key=group,
                                              summary="refused on collector 2").occurrences)

            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.5)  # collector 2's insert waits on collector 1's uncommitted one
        thread.join(timeout=10)
        assert folded == [2]  # it found collector 1's alert once that committed, and counted itself in
        with a.read() as tx:
            counted = tx.count_alerts()
        assert counted == {"agent_tamper": 1}, counted
    finally:
        a.close()
        b.close()
