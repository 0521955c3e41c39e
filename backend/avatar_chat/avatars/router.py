"""Avatar routes: HTTP in, service call, HTTP out."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.types import DecoratedCallable
from pydantic import TypeAdapter

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.avatars.card import CARD_MAX_BYTES, encoded
from avatar_chat.avatars.card_png import is_png
from avatar_chat.avatars.dependencies import AppSettings, Avatars, avatar_service
from avatar_chat.avatars.schemas import (
    HISTORY_PAGE_MAX,
    VERSION_MAX,
    AvatarCreate,
    AvatarHistoryPage,
    AvatarImage,
    AvatarRead,
    AvatarUpdate,
    CharacterCard,
    PersonaUpdateRequest,
)
from avatar_chat.avatars.service import HISTORY_CURSOR_MAX, HISTORY_CURSOR_PATTERN
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
    ValidationFailed,
    responses,
)
from avatar_chat.core.http import etag, header_parameter, page_cursor, page_limit, parse_if_match, read_header
from avatar_chat.core.openapi import ETAG, ETAG_HEADER, LOCATION_HEADER, answer, body

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


# What an answer holding the avatar (and its ETag) feeds: read, change (If-Match from the
# ETag), restore its version, its history, card and image, delete.
_AVATAR_LINKS: dict[str, dict[str, str]] = {
    "getMyAvatar": {},
    "updateMyAvatar": {"header.If-Match": ETAG},
    "switchPersona": {"header.If-Match": ETAG},
    "restoreMyAvatarVersion": {"path.version": body("/version"), "header.If-Match": ETAG},
    "listMyAvatarHistory": {},
    "exportMyAvatarCard": {},
    "setMyAvatarImage": {"header.If-Match": ETAG},
    "deleteMyAvatar": {},
}
_IMAGE_LINKS: dict[str, dict[str, str]] = {
    "getMyAvatarImage": {},
    "deleteMyAvatarImage": {"header.If-Match": ETAG},
}


def _avatar_answer(
    status_code: int, description: str | None = None, *, created: bool = False, image: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI of an answer that is the avatar: its ETag (and Location when created) and
    its links."""
    headers = {**ETAG_HEADER, **(LOCATION_HEADER if created else {})}
    targets = {**_AVATAR_LINKS, **(_IMAGE_LINKS if image else {})}
    return {status_code: answer(description, headers=headers, **targets)}


@router.post(
    "/me",
    status_code=status.HTTP_201_CREATED,
    response_model=AvatarRead,
    responses={
        **responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, Conflict),
        **_avatar_answer(status.HTTP_201_CREATED, created=True),
    },
    summary="Create my avatar",
    operation_id="createMyAvatar",
)
async def create_avatar(body: AvatarCreate, user: CurrentUser, service: Avatars) -> Response:
    """Creates the signed-in user's avatar (version 1). 409 `avatar_exists` when there is one already."""
    avatar = await service.create(user, body)
    return _answer(avatar, status.HTTP_201_CREATED, Location="/avatars/me")


@router.get(
    "/me",
    response_model=AvatarRead,
    responses={**responses(*AUTHENTICATED_ERRORS, NotFound), **_avatar_answer(200, image=True)},
    summary="My avatar",
    operation_id="getMyAvatar",
)
async def get_avatar(user: CurrentUser, service: Avatars) -> Response:
    """The signed-in user's avatar, with its `ETag` (its version) for `If-Match`. 404
    `avatar_not_found` without one."""
    return _answer(await service.get(user))


def _patch(path: str, *, summary: str, operation_id: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A PATCH of the avatar: the fields sent change (If-Match honoured); the answer is
    the avatar as written."""
    return router.patch(
        path,
        response_model=AvatarRead,
        responses={
            **responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, NotFound, PreconditionFailed),
            **_avatar_answer(200),
        },
        summary=summary,
        openapi_extra=_IF_MATCH,
        operation_id=operation_id,
    )


@_patch("/me", summary="Change my avatar's name, personality or backstory", operation_id="updateMyAvatar")
async def update_avatar(body: AvatarUpdate, user: CurrentUser, request: Request) -> Response:
    """Changes the fields sent; the answer is the avatar as written, a new version. With `If-Match`
    only if the avatar is still that version (412 otherwise). 404 `avatar_not_found`."""
    return _answer(await avatar_service.of(request).update(user, body, if_match=_if_match(request)))


@_patch("/me/persona", summary="Switch my avatar's persona", operation_id="switchPersona")
async def update_persona(body: PersonaUpdateRequest, user: CurrentUser, request: Request) -> Response:
    # The service comes from the request rather than a dependency: the persona switch is
    # the hottest write, and each FastAPI dependency costs it about 10 us per request.
    """Switches the persona live: the next reply in any conversation uses it. With `If-Match` only if
    the avatar is still that version (412 otherwise). 404 `avatar_not_found`."""
    return _answer(await avatar_service.of(request).update(user, body, if_match=_if_match(request)))


@router.get(
    "/me/history",
    responses=responses(*AUTHENTICATED_ERRORS, BadRequest),
    summary="My avatar's versions, newest first, paginated",
    operation_id="listMyAvatarHistory",
)
async def list_history(
    user: CurrentUser,
    service: Avatars,
    limit: Annotated[int, page_limit(HISTORY_PAGE_MAX)] = 20,
    cursor: Annotated[
        str | None, page_cursor(max_length=HISTORY_CURSOR_MAX, pattern=HISTORY_CURSOR_PATTERN)
    ] = None,
) -> AvatarHistoryPage:
    """Every version of the avatar, newest first; `next_cursor` for the next page (null at the end).
    Empty without an avatar. 400 `invalid_cursor` for a cursor this API did not give."""
    return await service.history(user, limit=limit, cursor=cursor)


@router.post(
    "/me/restore/{version}",
    response_model=AvatarRead,
    responses={**responses(*AUTHENTICATED_ERRORS, NotFound, PreconditionFailed), **_avatar_answer(200)},
    summary="Restore the persona of an earlier version (as a new version)",
    openapi_extra=_IF_MATCH,
    operation_id="restoreMyAvatarVersion",
)
async def restore_version(
    version: Annotated[
        int, Path(ge=1, le=VERSION_MAX, description="The version to restore (see GET /avatars/me/history).")
    ],
    user: CurrentUser,
    request: Request,
) -> Response:
    """Makes a new version with the persona of an earlier one (see the history). With `If-Match` only
    if the avatar is still that version (412 otherwise). 404 `avatar_not_found` (or no such
    version)."""
    return _answer(await avatar_service.of(request).restore(user, version, if_match=_if_match(request)))


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Delete my avatar",
    operation_id="deleteMyAvatar",
)
async def delete_avatar(user: CurrentUser, service: Avatars) -> Response:
    """Deletes the avatar and its image. 404 `avatar_not_found`."""
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
    )
    | _avatar_answer(200, image=True),
    summary="Set my avatar's image",
    description="The body is the image (at most AVATAR_IMAGE_MAX_BYTES). It is stored as square WebP "
    "images of 512 and 128 pixels (GET /avatars/me/image for their URLs); the avatar gets a new "
    "`image_path` and version. 415 for anything but PNG, JPEG or WebP, 422 when it does not decode "
    "or has more pixels than its kind may (`image_too_many_pixels`), 429 `image_rate_limited` with "
    "Retry-After over RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE (checked before the image is decoded), "
    "503 `busy` with Retry-After while the worker already decodes IMAGE_DECODES_PER_WORKER images. "
    "Codes: 404 `avatar_not_found`; 415 `unsupported_image_type`; 422 `image_undecodable`; "
    "503 `storage_unavailable`, `busy`.",
    openapi_extra=_IMAGE_BODY,
    operation_id="setMyAvatarImage",
)
async def put_image(user: CurrentUser, service: Avatars, request: Request) -> Response:
    if_match = _if_match(request)
    data = await request.body()
    return _answer(await service.set_image(user, data, if_match=if_match))


@router.get(
    "/me/image",
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Signed URLs of my avatar's image",
    operation_id="getMyAvatarImage",
)
async def get_image(user: CurrentUser, service: Avatars, request: Request) -> AvatarImage:
    """Signed URLs of the avatar's image, one per size, valid for a limited time. 404
    `avatar_not_found`, or `image_not_found` without an image."""
    return await service.image(user, base_url=str(request.base_url))


@router.delete(
    "/me/image",
    response_model=AvatarRead,
    responses={**responses(*AUTHENTICATED_ERRORS, NotFound, PreconditionFailed), **_avatar_answer(200)},
    summary="Remove my avatar's image",
    description="The avatar without an image, as a new version (unchanged if it had none). "
    "404 `avatar_not_found`; 503 `storage_unavailable`.",
    openapi_extra=_IF_MATCH,
    operation_id="deleteMyAvatarImage",
)
async def delete_image(user: CurrentUser, service: Avatars, request: Request) -> Response:
    return _answer(await service.delete_image(user, if_match=_if_match(request)))


CARD_PATH = "/avatars/me/card"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)


def _card_schema() -> dict[str, Any]:
    """The card a request may send: GET's answer as the reader takes it, written out here
    (GET's models are in the schema's components): `spec_version` may be left out (the spec's
    own is taken), and a field of `data` the spec names, other than `name`, may be null (read
    as left out)."""
    schema: dict[str, Any] = TypeAdapter(CharacterCard).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    defs = schema.pop("$defs")
    schema.pop("discriminator", None)  # its mapping names the answer's variants

    def written_out(ref: dict[str, str]) -> dict[str, Any]:
        return copy.deepcopy(defs[ref["$ref"].rsplit("/", 1)[1]])

    for i, ref in enumerate(schema["oneOf"]):
        variant = written_out(ref)
        variant["required"] = [name for name in variant["required"] if name != "spec_version"]
        data = variant["properties"]["data"] = written_out(variant["properties"]["data"])
        for name, prop in data["properties"].items():
            if name != "name":
                data["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
        schema["oneOf"][i] = variant
    return schema


@router.get(
    "/me/card",
    response_model=CharacterCard,
    responses={
        **responses(*AUTHENTICATED_ERRORS, NotFound),
        200: {
            "description": "The card as JSON, or with `format=png` a PNG with the card in its tEXt chunks.",
            "content": {"image/png": _BINARY},
        },
    },
    summary="My avatar as a character card (V2 or V3; JSON or PNG)",
    description="The avatar as a Character Card V2, or V3 when it was made from a V3 card, with "
    "everything the card it came from held (docs/api.md#character-cards). `format=png`: the avatar's "
    "image (its 512-pixel rendition; a placeholder with its initial without one) as PNG, the card "
    "base64 in a tEXt chunk `chara` (a V3 card in `ccv3`, and as V2 in `chara`). 404 "
    "`image_not_found` when the image's files are gone from storage, 503 `busy` while this worker "
    "already draws IMAGE_DECODES_PER_WORKER images. 404 `avatar_not_found`.",
    operation_id="exportMyAvatarCard",
)
async def get_card(
    user: CurrentUser,
    service: Avatars,
    format: Annotated[Literal["json", "png"], Query(description="`json` (the default) or `png`.")] = "json",
) -> Response:
    if format == "png":
        avatar, png = await service.card_png(user)
        return Response(
            png,
            media_type="image/png",
            headers={"ETag": etag(avatar.version), "Content-Disposition": _attachment(avatar.name, "png")},
        )
    avatar, card = await service.card(user)
    return Response(encoded(card), media_type="application/json", headers={"ETag": etag(avatar.version)})


def _attachment(name: str, extension: str) -> str:
    """A Content-Disposition that saves the file under the avatar's name."""
    plain = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "card"
    return f"attachment; filename=\"{plain}.{extension}\"; filename*=UTF-8''{quote(f'{name}.{extension}')}"


@router.post(
    "/me/card",
    status_code=status.HTTP_201_CREATED,
    response_model=AvatarRead,
    responses={
        200: {
            "model": AvatarRead,
            **_avatar_answer(200, "With If-Match: the avatar, overwritten by the card.", image=True)[200],
        },
        **responses(
            *AUTHENTICATED_ERRORS,
            BadRequest,
            PayloadTooLarge,
            UnsupportedMediaType,
            NotFound,
            Conflict,
            PreconditionFailed,
            TooManyRequests,
        ),
        **_avatar_answer(status.HTTP_201_CREATED, created=True, image=True),
    },
    summary="Create (or with If-Match overwrite) my avatar from a character card",
    description="The body is a Character Card V2 or V3: its JSON (`Content-Type: application/json`, "
    f"at most {CARD_MAX_BYTES} bytes) or a PNG with the card in a tEXt chunk `ccv3` or `chara` (at "
    "most AVATAR_IMAGE_MAX_BYTES; the PNG becomes the avatar's image). 201 with the new avatar; "
    "with If-Match (the avatar's ETag, or `*`) 200 with the avatar overwritten, 404 without one, 412 "
    "when stale; 409 `avatar_exists` without If-Match when there is one. 422 for a card that cannot "
    "be taken, each with its code: `card_malformed`, `card_unsupported_spec`, `card_invalid`, "
    "`card_backstory_too_long`, `card_not_found`, `card_undecodable`, `card_too_large`, and the "
    "image's `image_undecodable`, `image_too_many_pixels` (docs/api.md#character-cards). "
    "Also 404 `avatar_not_found`, 415 `unsupported_card_type`, 429 `image_rate_limited`.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A character card: its JSON, or a PNG holding it.",
            "content": {"application/json": {"schema": _card_schema()}, "image/png": _BINARY},
        },
        **_IF_MATCH,
    },
    operation_id="importAvatarCard",
)
async def import_card(
    user: CurrentUser, service: Avatars, settings: AppSettings, request: Request
) -> Response:
    header = read_header(request, "If-Match", max_length=_IF_MATCH_MAX)
    replace = header is not None  # `*` too: overwrite whatever version is there
    body = await request.body()
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if is_png(body):
        png, limit = True, settings.avatar_image_max_bytes
    elif media_type.lower() == "image/png":
        raise ValidationFailed("The body is not a PNG image.", code="image_undecodable")
    elif _JSON_TYPE.fullmatch(media_type):
        png, limit = False, CARD_MAX_BYTES
    else:
        raise UnsupportedMediaType(
            "Send a character card as JSON (Content-Type: application/json) or as a PNG.",
            code="unsupported_card_type",
        )
    if len(body) > limit:
        raise PayloadTooLarge(f"A character card {'PNG' if png else 'JSON'} may have at most {limit} bytes.")
    avatar = await service.import_card(user, body, png=png, replace=replace, if_match=parse_if_match(header))
    if replace:
        return _answer(avatar)
    return _answer(avatar, status.HTTP_201_CREATED, Location="/avatars/me")
