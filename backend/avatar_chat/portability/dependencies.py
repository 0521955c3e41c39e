"""How a route gets this worker's PortabilityService (`Portability`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.core.dependencies import StateDependency
from avatar_chat.portability.service import PortabilityService

portability_service = StateDependency[PortabilityService]("portability")
Portability = Annotated[PortabilityService, Depends(portability_service)]
