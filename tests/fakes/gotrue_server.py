"""A fake Supabase Auth (GoTrue) for a browser: real HTTP on 127.0.0.1, in a thread.

Answers what supabase-js sends for an email + password sign-in
(`POST /auth/v1/token?grant_type=password`) the way Supabase Auth does: a session whose
access token carries Supabase's claims (HS256 with the project's secret, `iss`
`<url>/auth/v1`), or 400 `invalid_credentials`; and CORS preflights, as the real service
allows any origin. Everything else is 404. `users` maps email -> (password, user id).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from avatar_chat.auth.tokens import mint_access_token


@dataclass
class FakeGoTrue:
    secret: str
    users: dict[str, tuple[str, uuid.UUID]] = field(default_factory=dict)
    url: str = ""
    requests: list[str] = field(default_factory=list)  # "METHOD path", in order

    @property
    def issuer(self) -> str:
        return self.url + "/auth/v1"

    def session(self, email: str, user_id: uuid.UUID) -> dict[str, Any]:
        expires_in = 3600
        token = mint_access_token(
            self.secret, user_id=user_id, email=email, ttl_s=expires_in, issuer=self.issuer
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in,
            "expires_at": int(time.time()) + expires_in,
            "refresh_token": uuid.uuid4().hex,
            "user": {
                "id": str(user_id),
                "aud": "authenticated",
                "role": "authenticated",
                "email": email,
                "app_metadata": {"provider": "email", "providers": ["email"]},
                "user_metadata": {},
                "created_at": "2026-01-01T00:00:00Z",
            },
        }


@contextlib.contextmanager
def serve_gotrue(secret: str) -> Iterator[FakeGoTrue]:
    fake = FakeGoTrue(secret=secret)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            fake.requests.append(f"OPTIONS {self.path}")
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", self.headers.get("Access-Control-Request-Headers", "*")
            )
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            fake.requests.append(f"POST {self.path}")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path != "/auth/v1/token?grant_type=password":
                self._answer(404, {"code": 404, "error_code": "not_found", "msg": "Not found"})
                return
            known = fake.users.get(str(body.get("email", "")).lower())
            if known is None or known[0] != body.get("password"):
                self._answer(
                    400,
                    {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"},
                )
                return
            self._answer(200, fake.session(body["email"].lower(), known[1]))

        def do_GET(self) -> None:
            fake.requests.append(f"GET {self.path}")
            self._answer(404, {"code": 404, "error_code": "not_found", "msg": "Not found"})

        def log_message(self, *_: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
