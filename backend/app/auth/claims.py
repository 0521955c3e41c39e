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

    def as_json(self) -> str:
        """The payload as Postgres `request.jwt.claims` expects it (what `auth.uid()` reads)."""
        return json.dumps(self.raw, separators=(",", ":"))
