"""How a route gets this worker's AvatarService (`Avatars`) and settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.avatars.service import AvatarService
from avatar_chat.core.dependencies import StateDependency
from avatar_chat.core.settings import Settings

avatar_service = StateDependency[AvatarService]("avatars")
Avatars = Annotated[AvatarService, Depends(avatar_service)]
app_settings = StateDependency[Settings]("settings")
AppSettings = Annotated[Settings, Depends(app_settings)]
