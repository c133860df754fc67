"""What every text the alert API and pages take must be: no NUL or other C0 control characters but tab and
newline (PostgreSQL refuses NUL in text; none of them belongs in a name, a reason, a path or a filter)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, model_validator

__all__ = ["CleanInput", "refuse_controls", "CONTROLS"]

CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def refuse_controls(value: Any, where: str = "") -> Any:
    """Returns the value if no string in it holds a control character; else raises ValueError naming where."""
    if isinstance(value, str):
        if CONTROLS.search(value):
            raise ValueError(f"{where or 'text'}: control characters (such as NUL) are not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            refuse_controls(k, where)
            refuse_controls(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            refuse_controls(v, where)
    return value


class CleanInput(BaseModel):
    """A request body or filter whose texts carry no control characters."""

    @model_validator(mode="before")
    @classmethod
    def _no_controls(cls, data: Any) -> Any:
        return refuse_controls(data)
