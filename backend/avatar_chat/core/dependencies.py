"""How a route gets what the lifespan made: one small dependency per resource.

The lifespan hands every resource to requests as `request.state.<name>` (see state.py);
`StateDependency` reads one of them, typed, both as a FastAPI dependency (`Depends`) and,
for hot routes that skip dependency resolution, as a plain call (`dependency.of(request)`).
Each domain's `dependencies.py` declares its own (`Avatars`, `Chat`, ...), so services
and repositories never import FastAPI.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request

from avatar_chat.core.database import Database

T = TypeVar("T")


class StateDependency(Generic[T]):
    """`request.state.<name>`, as a dependency (async: FastAPI runs sync ones in a thread)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def of(self, request: Request) -> T:
        value: T = getattr(request.state, self.name)
        return value

    async def __call__(self, request: Request) -> T:
        return self.of(request)


database = StateDependency[Database]("db")
DB = Annotated[Database, Depends(database)]
