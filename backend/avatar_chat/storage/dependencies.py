"""How a route gets this worker's object store (avatar images)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.core.dependencies import StateDependency
from avatar_chat.storage.base import ObjectStore

object_store = StateDependency[ObjectStore]("images")
Images = Annotated[ObjectStore, Depends(object_store)]
