"""Avatar routes: HTTP in, service call, HTTP out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.types import DecoratedCallable

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.avatars.dependencies import Avatars, avatar_service
from avatar_chat.avatars.schemas import (
    HISTORY_PAGE_MAX,
    VERSION_MAX,
    AvatarCreate,
    AvatarHistoryPage,
    AvatarImage,
    AvatarRead,
    AvatarUpdate,
    PersonaUpdateRequest,
)
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    TooManyRequests,
    UnsupportedMediaType,
    responses,
)
from avatar_chat.core.http import etag, header_parameter, page_cursor, page_limit, parse_if_match, read_header

router = APIRouter(prefix="/avatars", tags=["avatars"])

_IF_MATCH_DOC = (
    'Only apply the change if the avatar is still at this version (its ETag, e.g. "3"); 412 otherwise.'
)
_IF_MATCH_MAX = 1024
# Avatar writes read If-Match themselves (see read_header); documented here.
_IF_MATCH = {
    "parameters": [header_parameter("If-Match", description=_IF_MATCH_DOC, max_length=_IF_MATCH_MAX)]
}


def _if_match(request: Request) -> list[int] | None:
    return parse_if_match(read_header(request, "If-Match", max_length=_IF_MATCH_MAX))


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


def _patch(path: str, *, summary: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A PATCH of the avatar: the fields sent change (If-Match honoured); the answer is
    the avatar as written."""
    return router.patch(
        path,
        response_model=AvatarRead,
        responses=responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, NotFound, PreconditionFailed),
        summary=summary,
        openapi_extra=_IF_MATCH,
    )


@_patch("/me", summary="Change my avatar's name, personality or backstory")
async def update_avatar(body: AvatarUpdate, user: CurrentUser, request: Request) -> Response:
    return _answer(await avatar_service.of(request).update(user, body, if_match=_if_match(request)))


@_patch("/me/persona", summary="Switch my avatar's persona")
async def update_persona(body: PersonaUpdateRequest, user: CurrentUser, request: Request) -> Response:
    # The service comes from the request rather than a dependency: the persona switch is
    # the hottest write, and each FastAPI dependency costs it about 10 us per request.
    return _answer(await avatar_service.of(request).update(user, body, if_match=_if_match(request)))


@router.get(
    "/me/history",
    responses=responses(*AUTHENTICATED_ERRORS, BadRequest),
    summary="My avatar's versions, newest first, paginated",
)
async def list_history(
    user: CurrentUser,
    service: Avatars,
    limit: Annotated[int, page_limit(HISTORY_PAGE_MAX)] = 20,
    cursor: Annotated[str | None, page_cursor(32)] = None,
) -> AvatarHistoryPage:
    return await service.history(user, limit=limit, cursor=cursor)


@router.post(
    "/me/restore/{version}",
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound, PreconditionFailed),
    summary="Restore the persona of an earlier version (as a new version)",
    openapi_extra=_IF_MATCH,
)
async def restore_version(
    version: Annotated[
        int, Path(ge=1, le=VERSION_MAX, description="The version to restore (see GET /avatars/me/history).")
    ],
    user: CurrentUser,
    request: Request,
) -> Response:
    return _answer(await avatar_service.of(request).restore(user, version, if_match=_if_match(request)))


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Delete my avatar",
)
async def delete_avatar(user: CurrentUser, service: Avatars) -> Response:
    await service.delete(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


IMAGE_PATH = "/avatars/me/image"
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image file itself (PNG, JPEG or WebP; its type is read from its bytes).",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
        },
    },
    **_IF_MATCH,
}


@router.put(
    "/me/image",
    response_model=AvatarRead,
    # The 503 (`busy` here, as `storage_unavailable`) comes with AUTHENTICATED_ERRORS.
    responses=responses(
        *AUTHENTICATED_ERRORS,
        BadRequest,
        PayloadTooLarge,
        UnsupportedMediaType,
        NotFound,
        PreconditionFailed,
        TooManyRequests,
    ),
    summary="Set my avatar's image",
    description="The body is the image (at most AVATAR_IMAGE_MAX_BYTES). It is stored as square WebP "
    "images of 512 and 128 pixels (GET /avatars/me/image for their URLs); the avatar gets a new "
    "`image_path` and version. 415 for anything but PNG, JPEG or WebP, 422 when it does not decode "
    "or has more pixels than its kind may (`image_too_many_pixels`), 429 `image_rate_limited` with "
    "Retry-After over RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE (checked before the image is decoded), "
    "503 `busy` with Retry-After while the worker already decodes IMAGE_DECODES_PER_WORKER images.",
    openapi_extra=_IMAGE_BODY,
)
async def put_image(user: CurrentUser, service: Avatars, request: Request) -> Response:
    if_match = _if_match(request)
    data = await request.body()
    return _answer(await service.set_image(user, data, if_match=if_match))


@router.get(
    "/me/image",
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Signed URLs of my avatar's image",
)
async def get_image(user: CurrentUser, service: Avatars, request: Request) -> AvatarImage:
    return await service.image(user, base_url=str(request.base_url))


@router.delete(
    "/me/image",
    response_model=AvatarRead,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound, PreconditionFailed),
    summary="Remove my avatar's image",
    description="The avatar without an image, as a new version (unchanged if it had none).",
    openapi_extra=_IF_MATCH,
)
async def delete_image(user: CurrentUser, service: Avatars, request: Request) -> Response:
    return _answer(await service.delete_image(user, if_match=_if_match(request)))
