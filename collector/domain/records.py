"""Values shared by every feature: a page of results. Each feature keeps its own values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Page"]


@dataclass(frozen=True)
class Page:
    """A page of items and the cursor to the next page (None at the end)."""

    items: tuple[Any, ...]
    next_cursor: str | None
