"""SQL for the pseudonym secret and the pseudonyms handed out (collector/privacy)."""

from __future__ import annotations

import hashlib
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.storage.base import StoreError
from collector.storage.sql.schema import privacy_secret, pseudonyms

__all__ = ["PrivacySql", "user_key"]


def user_key(user_name: str) -> str:
    """The unique key of a user name in the pseudonyms table."""
    return hashlib.sha256(user_name.encode("utf-8")).hexdigest()


class PrivacySql:
    """The privacy area."""

    _conn: Connection

    def pseudonym_secret(self) -> bytes:
        """The installation's secret (made by migration 0008)."""
        found = self._conn.execute(sa.select(privacy_secret.c.secret).where(privacy_secret.c.id == 1)).scalar()
        if found is None:
            raise StoreError("the store has no pseudonym secret: its schema was not migrated")
        return bytes(found)

    def pseudonyms_for(self, user_names: Sequence[str]) -> dict[str, str]:
        """The recorded pseudonyms of these user names."""
        keys = {user_key(n): n for n in user_names}
        out: dict[str, str] = {}
        wanted = list(keys)
        for i in range(0, len(wanted), 500):
            for r in self._conn.execute(sa.select(pseudonyms.c.user_key, pseudonyms.c.code)
                                        .where(pseudonyms.c.user_key.in_(wanted[i:i + 500]))):
                out[keys[r.user_key]] = r.code
        return out

    def user_for_pseudonym(self, code: str) -> str | None:
        """The user name a pseudonym was recorded for."""
        found = self._conn.execute(sa.select(pseudonyms.c.user_name).where(pseudonyms.c.code == code)).scalar()
        return None if found is None else str(found)

    def add_pseudonym(self, *, code: str, user_name: str, now_ns: int) -> bool:
        """Records a pseudonym unless the code or the name has one (then nothing is written)."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(pseudonyms.insert().values(code=code, user_key=user_key(user_name),
                                                              user_name=user_name, created_at_ns=now_ns))
        except IntegrityError:
            return False
        return True
