"""Supabase's Storage and Auth admin HTTP APIs, faked in-process with respx.

Only what this backend calls, answering as the real services do (supabase/storage
src/http/routes/object/*.ts, src/storage/object.ts, src/http/error-handler.ts;
supabase/auth internal/api/admin.go, errors.go):

- Storage (/storage/v1): GET /object/{bucket}/{name} (the object's bytes, with its
  mimetype; 404 NoSuchKey "Object not found" when it is not there), POST
  /object/{bucket}/{name} (multipart: the `file` part, its content type the object's
  mimetype, form field `cacheControl` stored as max-age=<it>;
  without `x-upsert: true` an existing name is refused as Duplicate), DELETE
  /object/{bucket} {prefixes} (exact names; answers the objects deleted, [] for none),
  POST /object/list/{bucket} {prefix, limit, offset, sortBy} (one level below `prefix`,
  names relative to it, folders with id null), POST /object/sign/{bucket} {expiresIn,
  paths} ([{error, path, signedURL}], signedURL relative: /object/sign/<bucket>/<path>?token=).
  Errors as Storage renders them: {statusCode (a string), code, error, message}, HTTP 500
  for a 500 and 400 for every other status (which is only in the body).
- Auth (/auth/v1): DELETE /admin/users/{id} with a service_role JWT: 200 {} after deleting
  the auth.users row (through the table owner's connection, as GoTrue's tx.Destroy; the
  foreign keys cascade), 404 user_not_found when there is no such user.

Every request is recorded (`requests`); `fail(operation, ...)` makes the next ones fail
with a status or a connection error; `hooks[operation]` run before an operation is
answered (to look at the database at that moment, or hold an answer back).
"""

from __future__ import annotations

import asyncio
import email.message
import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import httpx
import jwt
import respx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.state import AppState
from tests.support.factories import TEST_JWT_SECRET, User, create_avatar
from tests.support.images import image_bytes

PROJECT_REF = "abcdefghijklmnopqrst"
SUPABASE_URL = f"https://{PROJECT_REF}.supabase.co"

Operation = Literal["upload", "download", "remove", "list", "sign", "delete_user"]

# What the migration creates (supabase/migrations/20261201180000_avatar_images.sql).
BUCKET_FILE_SIZE_LIMIT = 1_048_576
BUCKET_MIME_TYPES = ("image/webp",)
# src/storage/limits.ts
MAX_OBJECTS_PER_REQUEST = 1000
# storage.search (migrations/tenant/0063-...): LEAST(coalesce(limits, 100), 1500)
MAX_LIST_LIMIT = 1500
# supabase/auth: JWT.AdminRoles defaults
ADMIN_ROLES = ("service_role", "supabase_admin")
API_VERSION_2024 = "2024-01-01"


def service_role_key(secret: str, ref: str) -> str:
    """A legacy service_role API key: an HS256 JWT signed with the project's JWT secret."""
    iat = int(time.time())
    claims = {
        "iss": "supabase",
        "ref": ref,
        "role": "service_role",
        "iat": iat,
        "exp": iat + 10 * 365 * 86400,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def signed_in(user: User, secret: str, supabase_url: str) -> User:
    """The user with an access token as this project's Auth issues it (iss <url>/auth/v1)."""
    issuer = supabase_url.rstrip("/") + "/auth/v1"
    return User(
        user.id, user.email, mint_access_token(secret, user_id=user.id, email=user.email, issuer=issuer)
    )


@dataclass
class StoredObject:
    name: str
    data: bytes
    mimetype: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def metadata(self) -> dict[str, Any]:
        return {
            "eTag": f'"{hashlib.md5(self.data).hexdigest()}"',  # noqa: S324 - as S3's ETag
            "size": len(self.data),
            "mimetype": self.mimetype,
            "cacheControl": self.cache_control,
            "lastModified": self.created_at,
            "contentLength": len(self.data),
            "httpStatusCode": 200,
        }


@dataclass
class FilePart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Recorded:
    """One request the backend made, as Supabase received it."""

    operation: Operation | None  # None: a request no route of Supabase's answers here
    method: str
    path: str
    headers: httpx.Headers
    body: Any = None  # the JSON body, if any
    fields: dict[str, str] = field(default_factory=dict)  # multipart form fields
    files: list[FilePart] = field(default_factory=list)  # multipart file parts
    status: int | None = None  # what the fake answered (None: a connection error)
    answer: Any = None  # the JSON it answered
    done: bool = False  # answered (or refused)

    @property
    def object_name(self) -> str:
        """The object an upload wrote: the path after /object/<bucket>/."""
        return self.path.split("/", 5)[5]


@dataclass
class _Failure:
    status: int | None  # None: the connection fails
    body: bytes | None = None
    content_type: str = "application/json"


# Runs before the fake answers; a response it returns is the answer instead.
Hook = Callable[[Recorded], Awaitable[httpx.Response | None]]


class FakeSupabase:
    def __init__(
        self,
        owner: asyncpg.Connection,
        *,
        url: str,
        service_key: str,
        jwt_secret: str,
        bucket: str = "avatars",
    ) -> None:
        self.url = url.rstrip("/")
        self.host = httpx.URL(self.url).host
        self.service_key = service_key
        self.bucket = bucket
        self._owner = owner
        self._jwt_secret = jwt_secret
        # Storage's own key for signed URLs (not the project's JWT secret on current projects).
        self.url_signing_key = "storage-url-signing-" + uuid.uuid4().hex
        self.objects: dict[str, StoredObject] = {}
        self.requests: list[Recorded] = []
        self.hooks: dict[Operation, Hook] = {}
        self._failures: dict[Operation, deque[_Failure]] = {}
        self._down = False

    # --- steering -------------------------------------------------------------------------

    def install(self, router: respx.MockRouter) -> None:
        router.route(host=self.host).mock(side_effect=self._handle)

    def fail(
        self, operation: Operation, *, status: int | None = 500, times: int = 1, body: bytes | None = None
    ) -> None:
        """The next `times` requests of `operation` fail: with `status` (and the service's
        error body for it, or `body`), or, with status None, by a refused connection."""
        queue = self._failures.setdefault(operation, deque())
        queue.extend(_Failure(status, body) for _ in range(times))

    def go_down(self) -> None:
        """Every request fails to connect until `come_back`."""
        self._down = True

    def come_back(self) -> None:
        self._down = False

    def calls(self, *operations: Operation) -> list[Recorded]:
        return [r for r in self.requests if r.operation in operations]

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.objects if n.startswith(prefix))

    def put_object(self, name: str, data: bytes = b"RIFF....WEBP", mimetype: str = "image/webp") -> None:
        """An object that got there some other way (an earlier upload, the dashboard)."""
        self.objects[name] = StoredObject(name, data, mimetype, "max-age=3600")

    # --- the services -----------------------------------------------------------------------

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        recorded = Recorded(None, request.method, request.url.path, request.headers)
        self.requests.append(recorded)
        try:
            return await self._serve(request, recorded)
        finally:
            recorded.done = True

    async def _serve(self, request: httpx.Request, recorded: Recorded) -> httpx.Response:
        path = recorded.path
        route = self._route(request.method, path)
        if route is None:
            # Kong's answer for a path no service is behind.
            return self._answer(recorded, 404, {"message": "no Route matched with those values"})
        operation, handler, args = route
        recorded.operation = operation
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            recorded.fields, recorded.files = _parse_multipart(request.content, content_type)
        elif request.content:
            recorded.body = json.loads(request.content)
        if self._down:
            raise httpx.ConnectError("connection refused (fake: down)", request=request)
        failure = self._failures.get(operation)
        if failure:
            injected = failure.popleft()
            if injected.status is None:
                raise httpx.ConnectError("connection refused (fake)", request=request)
            if injected.body is not None:
                recorded.status = injected.status
                return httpx.Response(
                    injected.status, content=injected.body, headers={"content-type": injected.content_type}
                )
            if operation == "delete_user":
                return self.auth_error(recorded, injected.status, "unexpected_failure", "Database error")
            return self.storage_error(
                recorded, str(injected.status), "InternalError", "Internal server error"
            )
        if (hook := self.hooks.get(operation)) is not None and (instead := await hook(recorded)) is not None:
            return instead
        result: httpx.Response = await handler(recorded, *args)
        return result

    def _route(self, method: str, path: str) -> tuple[Operation, Any, tuple[str, ...]] | None:
        storage = "/storage/v1/object/"
        if path.startswith(storage):
            rest = path[len(storage) :]
            first, _, tail = rest.partition("/")
            if method == "POST" and first == "sign" and tail and "/" not in tail:
                return "sign", self._sign, (tail,)
            if method == "POST" and first == "list" and tail and "/" not in tail:
                return "list", self._list, (tail,)
            if method == "DELETE" and first and not tail:
                return "remove", self._remove, (first,)
            if method == "POST" and first not in {"sign", "list"} and tail:
                return "upload", self._upload, (first, tail)
            if method == "GET" and first not in {"sign", "public", "authenticated", "info"} and tail:
                return "download", self._download, (first, tail)
            return None
        admin = "/auth/v1/admin/users/"
        if method == "DELETE" and path.startswith(admin) and "/" not in path[len(admin) :].rstrip("/"):
            return "delete_user", self._delete_user, (path[len(admin) :].rstrip("/"),)
        return None

    # Storage ----------------------------------------------------------------------------------

    def _storage_denies(self, recorded: Recorded) -> httpx.Response | None:
        """Storage verifies the bearer JWT with the project's secret; the gateway wants the apikey."""
        headers = recorded.headers
        if headers.get("apikey") != self.service_key:
            return self._answer(recorded, 401, {"message": "Invalid API key"})
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return self.storage_error(recorded, "400", "InvalidJWT", "No authorization header was sent")
        try:
            claims = jwt.decode(token, self._jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            return self.storage_error(recorded, "400", "InvalidJWT", str(exc))
        if claims.get("role") != "service_role":
            # Anyone else is subject to the bucket's RLS, which grants no writes here.
            return self.storage_error(
                recorded, "403", "AccessDenied", "new row violates row-level security policy", "Unauthorized"
            )
        return None

    def _no_bucket(self, recorded: Recorded, bucket: str) -> httpx.Response | None:
        if bucket == self.bucket:
            return None
        return self.storage_error(recorded, "404", "NoSuchBucket", "Bucket not found", "Bucket not found")

    async def _upload(self, recorded: Recorded, bucket: str, name: str) -> httpx.Response:
        if (denied := self._storage_denies(recorded) or self._no_bucket(recorded, bucket)) is not None:
            return denied
        files = [f for f in recorded.files if f.name == "file"]
        if not recorded.headers.get("content-type", "").startswith("multipart/form-data") or len(files) != 1:
            return self.storage_error(recorded, "400", "InvalidRequest", "No content provided")
        part = files[0]
        mimetype = recorded.fields.get("contentType") or part.content_type or "application/octet-stream"
        if mimetype not in BUCKET_MIME_TYPES:
            return self.storage_error(
                recorded,
                "415",
                "InvalidMimeType",
                f"mime type {mimetype} is not supported",
                "invalid_mime_type",
            )
        if len(part.data) > BUCKET_FILE_SIZE_LIMIT:
            return self.storage_error(
                recorded,
                "413",
                "EntityTooLarge",
                "The object exceeded the maximum allowed size",
                "Payload too large",
            )
        if name in self.objects and recorded.headers.get("x-upsert") != "true":
            return self.storage_error(
                recorded, "409", "KeyAlreadyExists", "The resource already exists", "Duplicate"
            )
        cache_time = recorded.fields.get("cacheControl")
        stored = StoredObject(
            name, part.data, mimetype, f"max-age={cache_time}" if cache_time else "no-cache"
        )
        self.objects[name] = stored
        return self._answer(recorded, 200, {"Id": stored.id, "Key": f"{bucket}/{name}"})

    async def _download(self, recorded: Recorded, bucket: str, name: str) -> httpx.Response:
        if (denied := self._storage_denies(recorded) or self._no_bucket(recorded, bucket)) is not None:
            return denied
        stored = self.objects.get(name)
        if stored is None:
            return self.storage_error(recorded, "404", "NoSuchKey", "Object not found", "not_found")
        recorded.status = 200
        return httpx.Response(200, content=stored.data, headers={"content-type": stored.mimetype})

    async def _remove(self, recorded: Recorded, bucket: str) -> httpx.Response:
        if (denied := self._storage_denies(recorded) or self._no_bucket(recorded, bucket)) is not None:
            return denied
        prefixes = recorded.body.get("prefixes") if isinstance(recorded.body, dict) else None
        if not isinstance(prefixes, list) or not prefixes or not all(isinstance(p, str) for p in prefixes):
            return self.storage_error(
                recorded, "400", "InvalidRequest", "body/prefixes must NOT have fewer than 1 items"
            )
        if len(prefixes) > MAX_OBJECTS_PER_REQUEST:
            return self.storage_error(
                recorded,
                "400",
                "InvalidRequest",
                f"Bulk object requests are limited to {MAX_OBJECTS_PER_REQUEST} objects per request.",
            )
        deleted = [self.objects.pop(p) for p in dict.fromkeys(prefixes) if p in self.objects]
        return self._answer(recorded, 200, [self._row(o) for o in deleted])

    async def _list(self, recorded: Recorded, bucket: str) -> httpx.Response:
        if (denied := self._storage_denies(recorded) or self._no_bucket(recorded, bucket)) is not None:
            return denied
        body = recorded.body if isinstance(recorded.body, dict) else {}
        prefix = body.get("prefix")
        if not isinstance(prefix, str):
            return self.storage_error(
                recorded, "400", "InvalidRequest", "body must have required property 'prefix'"
            )
        limit = min(int(body.get("limit") or 100), MAX_LIST_LIMIT)
        offset = int(body.get("offset") or 0)
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # ObjectStorage.searchObjects: "assuming prefix is always a folder"
        entries: dict[str, StoredObject | None] = {}
        for name in sorted((n for n in self.objects if n.startswith(prefix)), key=str.lower):
            head, slash, _ = name[len(prefix) :].partition("/")
            entries.setdefault(head, None if slash else self.objects[name])
        listed: list[dict[str, Any]] = []
        for head in sorted(entries, key=str.lower)[offset : offset + limit]:
            obj = entries[head]
            if obj is None:
                listed.append(
                    {
                        "name": head,
                        "id": None,
                        "updated_at": None,
                        "created_at": None,
                        "last_accessed_at": None,
                        "metadata": None,
                    }
                )
            else:
                listed.append(
                    {
                        "name": head,
                        "id": obj.id,
                        "updated_at": obj.created_at,
                        "created_at": obj.created_at,
                        "last_accessed_at": obj.created_at,
                        "metadata": obj.metadata(),
                    }
                )
        return self._answer(recorded, 200, listed)

    async def _sign(self, recorded: Recorded, bucket: str) -> httpx.Response:
        if (denied := self._storage_denies(recorded) or self._no_bucket(recorded, bucket)) is not None:
            return denied
        body = recorded.body if isinstance(recorded.body, dict) else {}
        expires_in = _coerce_integer(body.get("expiresIn"))  # Fastify's Ajv: coerceTypes 'array'
        paths = body.get("paths")
        if expires_in is None or expires_in < 1:
            return self.storage_error(recorded, "400", "InvalidRequest", "body/expiresIn must be integer")
        if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_OBJECTS_PER_REQUEST:
            return self.storage_error(recorded, "400", "InvalidRequest", "body/paths must be an array")
        now = int(time.time())
        signed = []
        for path in paths:
            if path in self.objects:
                url = f"{bucket}/{path}"
                token = jwt.encode(
                    {"url": url, "iat": now, "exp": now + expires_in}, self.url_signing_key, "HS256"
                )
                signed.append({"error": None, "path": path, "signedURL": f"/object/sign/{url}?token={token}"})
            else:
                signed.append(
                    {
                        "error": "Either the object does not exist or you do not have access to it",
                        "path": path,
                        "signedURL": None,
                    }
                )
        return self._answer(recorded, 200, signed)

    def _row(self, obj: StoredObject) -> dict[str, Any]:
        """An object as DELETE /object/{bucket} answers it (objectSchema)."""
        return {
            "bucket_id": self.bucket,
            "name": obj.name,
            "owner": None,
            "owner_id": None,
            "version": obj.version,
            "id": obj.id,
            "updated_at": obj.created_at,
            "created_at": obj.created_at,
            "last_accessed_at": obj.created_at,
            "metadata": obj.metadata(),
            "user_metadata": None,
        }

    def storage_error(
        self, recorded: Recorded, status: str, code: str, message: str, error: str | None = None
    ) -> httpx.Response:
        """As src/http/error-handler.ts sends a StorageBackendError: 500 for a 500, else 400."""
        body = {"statusCode": status, "code": code, "error": error or code, "message": message}
        return self._answer(recorded, 500 if status == "500" else 400, body)

    # Auth ---------------------------------------------------------------------------------------

    async def _delete_user(self, recorded: Recorded, user_id: str) -> httpx.Response:
        scheme, _, token = recorded.headers.get("authorization", "").partition(" ")
        if recorded.headers.get("apikey") != self.service_key:
            return self._answer(recorded, 401, {"message": "Invalid API key"})
        if scheme.lower() != "bearer" or not token:
            return self.auth_error(recorded, 401, "no_authorization", "This endpoint requires a Bearer token")
        try:
            claims = jwt.decode(token, self._jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            return self.auth_error(
                recorded, 403, "bad_jwt", "invalid JWT: unable to parse or verify signature"
            )
        if claims.get("role") not in ADMIN_ROLES:
            return self.auth_error(recorded, 403, "not_admin", "User not allowed")
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            return self.auth_error(recorded, 404, "validation_failed", "user_id must be an UUID")
        deleted = await self._owner.fetchval("delete from auth.users where id = $1 returning id", uid)
        if deleted is None:
            return self.auth_error(recorded, 404, "user_not_found", "User not found")
        return self._answer(recorded, 200, {})

    def auth_error(self, recorded: Recorded, status: int, code: str, message: str) -> httpx.Response:
        """As GoTrue's handleResponseErrorHTTP: the 2024-01-01 shape when the client asks for it."""
        headers = {"x-sb-error-code": code}
        if recorded.headers.get("x-supabase-api-version", "") >= API_VERSION_2024:
            headers["x-supabase-api-version"] = API_VERSION_2024
            body: dict[str, Any] = {"code": code, "message": message}
        else:
            body = {"code": status, "error_code": code, "msg": message}
        return self._answer(recorded, status, body, headers)

    @staticmethod
    def _answer(
        recorded: Recorded, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        recorded.status = status
        recorded.answer = body
        return httpx.Response(status, json=body, headers=headers)


def _coerce_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], list[FilePart]]:
    """Exactly the bytes of each part (no line-ending conversions)."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    assert isinstance(boundary, str), content_type
    fields: dict[str, str] = {}
    files: list[FilePart] = []
    delimiter = b"--" + boundary.encode()
    sections = body.split(delimiter)
    assert sections[-1].startswith(b"--"), "no closing delimiter"
    for section in sections[1:-1]:
        assert section.startswith(b"\r\n") and section.endswith(b"\r\n")
        head, _, content = section[2:-2].partition(b"\r\n\r\n")
        part = email.message.Message()
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            part[key.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        assert isinstance(name, str)
        if isinstance(filename, str):
            files.append(FilePart(name, filename, part.get("content-type"), content))
        else:
            fields[name] = content.decode()
    return fields, files


@dataclass
class OnSupabase:
    """The real app configured for a Supabase project whose HTTP APIs are `fake`."""

    client: httpx.AsyncClient
    state: AppState
    fake: FakeSupabase
    settings: Settings

    def signed_in(self, user: User) -> User:
        return signed_in(user, TEST_JWT_SECRET, SUPABASE_URL)

    async def settle(self) -> None:
        """Until the work the app does after its answers (removing objects) is done."""
        assert await self.state.tasks.drain(5) == 0

    async def with_image(self, user: User) -> dict[str, Any]:
        """A new avatar for `user` with an image put, and what that set off in Storage done."""
        await create_avatar(self.client, user)
        response = await self.client.put("/avatars/me/image", content=image_bytes(), headers=user.headers)
        assert response.status_code == 200, response.text
        await self.settle()
        avatar: dict[str, Any] = response.json()
        return avatar

    def assert_service_role(self, request: Recorded) -> None:
        """The request came with the service-role key, as apikey and as bearer token."""
        assert request.headers["apikey"] == self.fake.service_key
        assert request.headers["authorization"] == f"Bearer {self.fake.service_key}"


@asynccontextmanager
async def on_supabase(
    settings: Settings, owner: asyncpg.Connection, **overrides: object
) -> AsyncIterator[OnSupabase]:
    """The app with SUPABASE_URL and a service-role key; respx answers Supabase's host (and
    only it: the in-process test client passes through, anything else is refused)."""
    key = service_role_key(TEST_JWT_SECRET, PROJECT_REF)
    configured = settings.model_copy(
        update={"supabase_url": SUPABASE_URL, "supabase_service_role_key": SecretStr(key), **overrides}
    )
    fake = FakeSupabase(owner, url=SUPABASE_URL, service_key=key, jwt_secret=TEST_JWT_SECRET)
    with respx.mock(assert_all_mocked=True, assert_all_called=False, using="httpx") as router:
        router.route(scheme="http", host="test").pass_through()
        fake.install(router)
        app = create_app(configured)
        async with LifespanManager(app) as manager:
            state: AppState = app.state.resources
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                yield OnSupabase(client, state, fake, configured)
            await state.tasks.drain(5)
    unexpected = [(r.method, r.path) for r in fake.requests if r.operation is None]
    assert not unexpected, f"requests no Supabase API answers: {unexpected}"


async def wait_for(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    """Until `condition()` holds: polled every 5 ms, failing after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.005)
