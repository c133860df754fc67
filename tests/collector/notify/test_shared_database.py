"""Several collectors on one PostgreSQL: they keep each robot under its limit together (the window is in
the database) and send each notification once; an alert whose insert commits late is not passed over."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
import sqlalchemy as sa

from collector.alerts.service import raise_alert
from collector.notify.wecom import WeComRobot
from collector.notify.worker import NotifyWorker
from collector.storage import SqlStore

from tests.collector.notify.fakes import Clock, FakeRobot
from tests.collector.notify.test_worker import BASE, numbers, raise_high
from tests.conftest import fresh_pg_schema, pg_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def two_stores() -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two collectors' stores on one PostgreSQL schema."""
    with fresh_pg_schema("n") as schema:
        first = SqlStore(sa.create_engine(pg_url(schema)))
        second = SqlStore(sa.create_engine(pg_url(schema)))
        try:
            yield first, second
        finally:
            first.close()
            second.close()


def test_two_collectors_keep_one_robot_under_twenty_a_minute_and_send_each_alert_once(
        two_stores: tuple[SqlStore, SqlStore], clock: Clock, robot: FakeRobot) -> None:
    workers = [NotifyWorker(s, [WeComRobot(robot.url, base_url=BASE, timeout_s=2.0)], clock=clock) for s in two_stores]
    ids = raise_high(two_stores[0], clock, 30)
    runs = [threading.Thread(target=w.run_once) for w in workers for _ in range(3)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=30)
    assert len(robot.accepted) == 20 and 45009 not in robot.answers
    assert sorted(numbers(robot.accepted)) == ids
    for w in workers:
        w.run_once()
    assert len(robot.accepted) == 20


def test_an_alert_that_commits_after_a_later_one_is_still_notified(
        two_stores: tuple[SqlStore, SqlStore], clock: Clock, robot: FakeRobot) -> None:
    store, other = two_stores
    worker = NotifyWorker(other, [WeComRobot(robot.url, base_url=BASE, timeout_s=2.0)], clock=clock)
    inserted, release = threading.Event(), threading.Event()
    slow: list[int] = []

    def slow_writer() -> None:  # takes an id, then waits before it commits
        with store.transaction() as tx:
            slow.append(raise_alert(tx=tx, rule="usb_exfiltration", severity="high", summary="s", now_ns=clock()).id or 0)
            inserted.set()
            release.wait(10)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(10)
    later = raise_high(store, clock)  # a larger id, committed first... once the slow one lets go of its lock
    collecting = threading.Thread(target=worker.collect)
    collecting.start()
    time.sleep(0.2)
    assert collecting.is_alive()  # the worker waits for the insert in flight instead of reading past it
    release.set()
    writer.join(10)
    collecting.join(10)
    worker.deliver()
    assert sorted(numbers(robot.accepted)) == sorted(slow + later)
