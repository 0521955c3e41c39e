"""What the web client's own routes take and answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from avatar_chat.core.schemas import StrictModel

# Good enough to catch typos; the dev sign-in sends no mail, so nothing more is needed.
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
]

ClientMode = Literal["dev", "supabase", "none"]


class WebConfig(BaseModel):
    """/app/config.json: how the web client signs users in, and the suitability notice it shows."""

    mode: ClientMode = Field(
        description="`supabase`: Supabase Auth with the project URL and anon key; `dev`: the local "
        "sign-in (embedded database, APP_ENV=development); `none`: no sign-in is configured."
    )
    supabase_url: str | None
    supabase_anon_key: str | None
    suitability_notice: str | None = Field(
        default=None,
        description="SAFETY_SUITABILITY_NOTICE: shown on the sign-in screen and in the chat view "
        "(e.g. that AI companions may not be suitable for some minors); null when the setting is empty.",
    )


class DevSignInRequest(StrictModel):
    email: Email


class DevUser(BaseModel):
    id: uuid.UUID
    email: str


class DevSession(BaseModel):
    """Shaped like the fields of a Supabase Auth session that a client uses."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme's name
    expires_in: int
    expires_at: int
    user: DevUser
