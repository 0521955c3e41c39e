"""The verified identity of a request."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any


class Claims:
    """Who a verified token says the caller is, and its payload as Postgres reads it.

    The payload is kept only as its compact JSON (what `request.jwt.claims` takes): the
    verified-token cache holds thousands of these, and a parsed dict costs several times
    the size of its JSON (a padded `user_metadata` that users can set themselves most of
    all). Immutable; equal and hashed by identity (sub, role, email)."""

    __slots__ = ("_json", "email", "exp", "role", "sub")

    sub: uuid.UUID
    role: str
    email: str | None
    exp: float | None  # the token's `exp`, when it has a numeric one
    _json: str

    def __init__(self, *, sub: uuid.UUID, role: str, email: str | None, raw: Mapping[str, Any]) -> None:
        exp = raw.get("exp")
        values = {
            "sub": sub,
            "role": role,
            "email": email,
            "exp": float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            "_json": json.dumps(raw, separators=(",", ":")),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Claims are immutable ({name})")

    def as_json(self) -> str:
        """The payload as Postgres `request.jwt.claims` expects it (what `auth.uid()` reads)."""
        return self._json

    @property
    def raw(self) -> dict[str, Any]:
        """The payload, parsed anew (a copy): for the rare reader of a claim beyond the identity."""
        payload: dict[str, Any] = json.loads(self._json)
        return payload

    @property
    def size(self) -> int:
        """Roughly what this holds in memory, in bytes (the JSON dominates)."""
        return len(self._json) + 200

    def _identity(self) -> tuple[uuid.UUID, str, str | None]:
        return (self.sub, self.role, self.email)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Claims):
            return NotImplemented
        return self._identity() == other._identity() and self._json == other._json

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        # Never the payload: logging a Claims must not dump email, phone or metadata.
        return f"Claims(sub={self.sub!r}, role={self.role!r}, email={self.email!r})"
