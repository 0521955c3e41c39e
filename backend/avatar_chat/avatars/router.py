"""Avatar routes: HTTP in, service call, HTTP out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.avatars.schemas import AvatarCreate, AvatarRead, AvatarUpdate, PersonaUpdateRequest
from avatar_chat.avatars.service import Avatars
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    Conflict,
    NotFound,
    PreconditionFailed,
    responses,
)
from avatar_chat.core.http import etag, parse_if_match

router = APIRouter(prefix="/avatars", tags=["avatars"])

_IF_MATCH_DOC = (
    'Only apply the change if the avatar is still at this version (its ETag, e.g. "3"); 412 otherwise.'
)
IfMatch = Annotated[str | None, Header(description=_IF_MATCH_DOC, max_length=1024)]


def _answer(avatar: AvatarRead, status_code: int = status.HTTP_200_OK, **headers: str) -> Response:
    # Serialised once, here: returning the model would have FastAPI validate it again.
    return Response(
        avatar.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag(avatar.version), **headers},
    )


@router.post(
    "/me",
    status_code=status.HTTP_201_CREATED,
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, Conflict),
    summary="Create my avatar",
)
async def create_avatar(body: AvatarCreate, user: CurrentUser, service: Avatars) -> Response:
    avatar = await service.create(user, body)
    return _answer(avatar, status.HTTP_201_CREATED, Location="/avatars/me")


@router.get(
    "/me",
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="My avatar",
)
async def get_avatar(user: CurrentUser, service: Avatars) -> Response:
    return _answer(await service.get(user))


@router.patch(
    "/me",
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, NotFound, PreconditionFailed),
    summary="Change my avatar's name, personality or backstory",
)
async def update_avatar(
    body: AvatarUpdate,
    user: CurrentUser,
    service: Avatars,
    if_match: IfMatch = None,
) -> Response:
    return _answer(await service.update(user, body, if_match=parse_if_match(if_match)))


@router.patch(
    "/me/persona",
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, NotFound, PreconditionFailed),
    summary="Switch my avatar's persona",
)
async def update_persona(
    body: PersonaUpdateRequest,
    user: CurrentUser,
    service: Avatars,
    if_match: IfMatch = None,
) -> Response:
    return _answer(await service.update(user, body, if_match=parse_if_match(if_match)))


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Delete my avatar",
)
async def delete_avatar(user: CurrentUser, service: Avatars) -> Response:
    await service.delete(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
