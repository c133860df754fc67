"""Ledger commands of the CLI (filled in below)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, *, actor_default: str) -> None:
    """Adds the ledger's subcommands to the parser."""
    return None
