"""The verified identity of a request."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Claims:
    sub: uuid.UUID
    role: str
    email: str | None
    # Kept out of repr so logging a Claims never dumps the whole payload (email, phone, metadata).
    raw: dict[str, Any] = field(repr=False, hash=False)
    # Serialised once: the same Claims serves every request carrying the same token.
    _json: str = field(init=False, repr=False, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_json", json.dumps(self.raw, separators=(",", ":")))

    def as_json(self) -> str:
        """The payload as Postgres `request.jwt.claims` expects it (what `auth.uid()` reads)."""
        return self._json
