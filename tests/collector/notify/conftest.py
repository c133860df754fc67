"""Fixtures of the notification tests: a hand-moved clock, a fake WeCom robot and a fake SMTP server."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.collector.notify.fakes import Clock, FakeRobot, FakeSmtp, serve_robot, serve_smtp


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def robot(clock: Clock) -> Iterator[FakeRobot]:
    yield from serve_robot(FakeRobot(clock))


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    yield from serve_smtp(FakeSmtp())
