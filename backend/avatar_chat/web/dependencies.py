"""How the web client's routes get this worker's `WebClient`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.core.dependencies import StateDependency
from avatar_chat.web.service import WebClient

web_client = StateDependency[WebClient]("web")
Web = Annotated[WebClient, Depends(web_client)]
