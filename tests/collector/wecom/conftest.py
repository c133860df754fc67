from __future__ import annotations

from typing import Iterator

import pytest

from tests.collector.wecom.fake_wecom import FakeWeCom


@pytest.fixture
def fake_wecom() -> Iterator[FakeWeCom]:
    with FakeWeCom() as wecom:
        yield wecom
