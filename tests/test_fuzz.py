"""G6 by property-based fuzzing: every operation of the app's own OpenAPI schema, fed
generated valid and invalid input, answers inside its documented contract and never 5xx.

Schemathesis generates the cases (Hypothesis strategies, positive and negative, plus its
deterministic boundary "coverage" cases) and checks each response against the schema:
status code documented, content type documented, body (JSON, or each SSE event) matching
the documented schema. The cases are sent here, on the test's event loop, to the session's
app (`app.state.asgi`, lifespan state attached). Schemathesis' own ASGI transport
(`from_asgi`, `case.call()`) runs the app on an event loop thread of its own and sends it
a second lifespan startup, which would swap the session's state for a pool bound to that
other loop; so the schema is fetched from the app with httpx and loaded with `from_dict`,
and Hypothesis runs in a worker thread that hands each request to the loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg
import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup

from tests.support.factories import User, create_avatar, create_conversation, create_user

T = TypeVar("T")
Operation: TypeAlias = APIOperation[Any, Any, Any, Any]
AnyCase: TypeAlias = Case[Any]

BASE_URL: Final = "http://test"
# Stands for "the fuzzed user's real conversation" in a generated path; swapped in at send time.
REAL_CONVERSATION: Final = "00000000-0000-4000-8000-0000000c0de0"
SEND_MESSAGE: Final = "POST /conversations/{conversation_id}/messages"
PUBLIC: Final = frozenset({"GET /health", "GET /ready"})
# Routes whose credential is not a bearer token but in the URL (a signed URL's token):
# without one they answer 4xx for the URL, never 401.
OWN_CREDENTIAL: Final = frozenset({"GET /storage/v1/object/sign/{bucket}/{path}"})

# An archive (POST /me/import) is bytes, as application/octet-stream is: schemathesis has no
# serializer of its own for application/zip.
schemathesis.serializer.alias("application/zip", "application/octet-stream")

POSITIVE_EXAMPLES: Final = 50
NEGATIVE_EXAMPLES: Final = 40
ANONYMOUS_EXAMPLES: Final = 10

CHECKS: Final = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
_QUIET_HEADERS: Final = frozenset(
    {"user-agent", "accept-encoding", "connection", "content-length", "x-schemathesis-testcaseid"}
)


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        # Failures are collected, not raised: nothing to shrink, and every one is reported.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@dataclass
class Fuzzer:
    """Sends generated cases to the app, checks the answers, keeps the tally."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    user: User
    conversation_id: str
    authenticated: bool = True
    cases: int = 0
    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def fuzz(self, operation: Operation, mode: GenerationMode, max_examples: int) -> None:
        if mode is GenerationMode.NEGATIVE and not _has_input(operation):
            return
        strategy = operation.as_strategy(generation_mode=mode)
        if self.authenticated and _takes_conversation(operation):
            # Half the cases aim at the user's real conversation, so they get past the 404.
            aimed = operation.as_strategy(
                generation_mode=mode, path_parameters={"conversation_id": REAL_CONVERSATION}
            )
            strategy = st.one_of(strategy, aimed)

        @_settings(max_examples)
        @given(case=strategy, sse=st.booleans(), no_token=st.booleans())
        def run(case: AnyCase, sse: bool, no_token: bool) -> None:
            self.check(case, sse=sse, no_token=no_token)

        run()

    def cover(self, schema: BaseSchema, operation: Operation) -> None:
        """Schemathesis' deterministic boundary cases: each limit, just inside and just past it."""
        config = schema.config.generation_for(operation=operation)
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=config
        ):
            if _takes_conversation(operation) and _is_uuid(case.path_parameters.get("conversation_id")):
                case.path_parameters["conversation_id"] = REAL_CONVERSATION
            self.check(case)

    def check(self, case: AnyCase, *, sse: bool = False, no_token: bool = False) -> None:
        label = case.operation.label
        prepared = self._prepare(case, sse=sse, no_token=no_token)
        started = time.perf_counter()
        raw = self._on_loop(self._send(prepared))
        elapsed = time.perf_counter() - started
        self.cases += 1
        self.operations.add(label)
        self.statuses[raw.status_code] += 1
        repro = f"{_describe(prepared, self.user.token)}\n  -> {raw.status_code} {raw.text[:300]!r}"
        if raw.status_code >= 500:
            self.server_errors.append(f"{label}: {repro}")
        if not self.authenticated and label not in OWN_CREDENTIAL:
            expected = 200 if label in PUBLIC else 401
            if raw.status_code != expected:
                self.unexpected.append(f"{label}: expected {expected}: {repro}")
        response = schemathesis.Response(
            status_code=raw.status_code,
            headers={name: raw.headers.get_list(name) for name in raw.headers},
            content=raw.content,
            request=prepared,
            elapsed=elapsed,
            verify=True,
            message=raw.reason_phrase,
            encoding=raw.encoding,
        )
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                if raw.status_code < 500:  # 5xx are reported above, once
                    self.violations.append(f"{label}: {failure.title}: {failure.message}\n  {repro}")
        self._on_loop(self._restore(case, raw.status_code))

    def _prepare(self, case: AnyCase, *, sse: bool, no_token: bool) -> requests.PreparedRequest:
        if case.path_parameters.get("conversation_id") == REAL_CONVERSATION:
            case.path_parameters["conversation_id"] = self.conversation_id
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        kwargs.pop("timeout", None)
        headers: dict[str, str] = kwargs["headers"]
        if self.authenticated or no_token:
            for name in [name for name in headers if name.lower() == "authorization"]:
                del headers[name]
        if self.authenticated:
            # Set after serializing: a negative case may have dropped the generated token.
            headers["Authorization"] = f"Bearer {self.user.token}"
        if sse and case.operation.label == SEND_MESSAGE:
            headers["Accept"] = "text/event-stream"
        return requests.Request(**kwargs).prepare()

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _send(self, prepared: requests.PreparedRequest) -> httpx.Response:
        # Header values go over the wire as latin-1, as schemathesis' own transports send them.
        headers = [(_latin1(k), _latin1(v)) for k, v in prepared.headers.items()]
        assert prepared.method is not None and prepared.url is not None
        return await self.client.request(
            prepared.method, prepared.url, headers=headers, content=_body(prepared)
        )

    async def _restore(self, case: AnyCase, status: int) -> None:
        """Deletes succeed too; put back what the next cases need to reach deep code."""
        if not self.authenticated or status != 204:
            return
        if case.operation.label == "DELETE /avatars/me":
            await create_avatar(self.client, self.user)
        elif case.path_parameters.get("conversation_id") == self.conversation_id:
            self.conversation_id = (await create_conversation(self.client, self.user))["id"]


def _latin1(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _body(prepared: requests.PreparedRequest) -> bytes | None:
    body = prepared.body
    assert body is None or isinstance(body, str | bytes), type(body)  # no streamed uploads here
    return body.encode() if isinstance(body, str) else body


def _describe(prepared: requests.PreparedRequest, token: str) -> str:
    """The request, short enough to read in a failure report (the token elided)."""
    headers = {
        name: _latin1(value).decode("latin-1").replace(token, "<token>")
        for name, value in prepared.headers.items()
        if name.lower() not in _QUIET_HEADERS
    }
    body = _body(prepared)
    return f"{prepared.method} {prepared.url} headers={headers!r} body={body[:300] if body else body!r}"


def _has_input(operation: Operation) -> bool:
    """Whether there is anything but the token (always sent valid here) to make invalid."""
    headers = [p for p in operation.headers if p.name.lower() != "authorization"]
    return bool(operation.path_parameters or operation.query or operation.body or headers)


def _takes_conversation(operation: Operation) -> bool:
    return any(p.name == "conversation_id" for p in operation.path_parameters)


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _operations(schema: BaseSchema) -> Iterator[Operation]:
    """Every operation, `DELETE /me` last: once it succeeds the user is gone, and every
    later authenticated case would stop at 401."""
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    yield from sorted(operations, key=lambda operation: operation.label == "DELETE /me")


@pytest.fixture
async def fuzz_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # A 500 must come back as a response to check, not re-raised as the app's exception.
    transport = httpx.ASGITransport(app=app.state.asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


# The HTTP contract: inputs are validated before any SQL, and the SQL itself runs on every
# major in the rest of the suite; one fuzzing run (on the embedded server) is enough.
@pytest.mark.same_on_every_major
async def test_the_api_keeps_its_openapi_contract_under_fuzzing(
    fuzz_client: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    started = time.perf_counter()
    # Its own settings, not the checkout's schemathesis.toml: that one is for runs from
    # outside, and loading it registers their hook (users made over HTTP) for the process.
    schema = schemathesis.openapi.from_dict(
        (await fuzz_client.get("/openapi.json")).json(), config=SchemathesisConfig()
    )
    operations = list(_operations(schema))

    user = await create_user(owner)
    await create_avatar(fuzz_client, user)
    conversation = await create_conversation(fuzz_client, user)
    for content in ("Hello!", "Tell me more."):
        sent = await fuzz_client.post(
            f"/conversations/{conversation['id']}/messages", json={"content": content}, headers=user.headers
        )
        assert sent.status_code == 201, sent.text

    loop = asyncio.get_running_loop()
    authed = Fuzzer(loop, fuzz_client, user, conversation["id"])
    anonymous = Fuzzer(loop, fuzz_client, user, conversation["id"], authenticated=False)

    def run_all() -> None:
        for operation in operations:
            authed.fuzz(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES)
            authed.fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)
            authed.cover(schema, operation)
            anonymous.fuzz(operation, GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES)

    await asyncio.to_thread(run_all)

    server_errors = authed.server_errors + anonymous.server_errors
    violations = authed.violations + anonymous.violations
    report = (
        f"fuzzed {len(operations)} operations in {time.perf_counter() - started:.1f}s; "
        f"{authed.cases} authenticated cases {dict(sorted(authed.statuses.items()))}; "
        f"{anonymous.cases} anonymous cases {dict(sorted(anonymous.statuses.items()))}; "
        f"5xx: {len(server_errors)}; schema violations: {len(violations)}"
    )
    print(report)
    problems = [*server_errors, *violations, *anonymous.unexpected]
    assert not problems, report + "\n\n" + "\n\n".join(problems)
    assert authed.operations == anonymous.operations == {op.label for op in operations}
    # The fuzzing went deep: past auth, to the real rows, and through the real sends.
    assert authed.statuses[401] == 0
    assert authed.statuses[200] > 0 and authed.statuses[201] > 0 and authed.statuses[204] > 0
