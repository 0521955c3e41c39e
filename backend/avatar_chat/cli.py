"""`avatar-chat`: serve the API, migrate a database, mint a local access token, print the
yearly safety report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator

import asyncpg
import uvicorn

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.http_server import HeaderLimitedHttpToolsProtocol
from avatar_chat.core.logs import configure_logging, level_number, logging_config
from avatar_chat.core.settings import Settings
from avatar_chat.ops import runtime
from avatar_chat.ops.migrate import SessionRequired, migrate

log = logging.getLogger("avatar_chat.cli")

_LOCAL_AUTH_COMMENT = "Local stand-in for Supabase Auth users (embedded mode only)."


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Start the embedded database and migrate once, here, so N workers do not race to
    # do it; workers get the resolved connection string through the env (and read the
    # embedded mode's generated JWT secret from the data folder, as this process did).
    rt = asyncio.run(runtime.prepare(settings))
    host = args.host or settings.host
    os.environ["DATABASE_URL"] = rt.dsn
    os.environ["MIGRATE_ON_START"] = "false"
    # The address the workers serve on: the dev sign-in answers only for it (and loopback).
    os.environ["HOST"] = host
    if rt.embedded_database:
        os.environ[runtime.EMBEDDED_HANDOFF_ENV] = rt.dsn
    else:
        os.environ.pop(runtime.EMBEDDED_HANDOFF_ENV, None)
    # uvicorn re-raises the stop signal once it has shut down; turn SIGTERM into a normal
    # exit so the embedded database is stopped below instead of being left running.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with _metrics_files(), _metrics_port(settings, host):
            uvicorn.run(
                "avatar_chat.main:create_app",
                factory=True,
                host=host,
                port=args.port or settings.port,
                workers=args.workers or settings.web_concurrency,
                loop="uvloop",
                # httptools with a cap on the request head (431 over MAX_HEADER_BYTES); the
                # cap travels to every worker in the Config, the field h11 reads for the same.
                http=HeaderLimitedHttpToolsProtocol,
                h11_max_incomplete_event_size=settings.max_header_bytes,
                # Each worker applies it: the request id on every line, text or JSON.
                log_config=logging_config(settings.log_level, settings.log_format),
                log_level=level_number(settings.log_level),
                access_log=False,  # ours (avatar_chat.access) has the request id and no query strings
                timeout_graceful_shutdown=int(settings.shutdown_grace_s),
                proxy_headers=True,
            )
    finally:
        asyncio.run(rt.close())
    return 0


@contextlib.contextmanager
def _metrics_files() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for this run's workers, set before any of them (or this
    process) imports prometheus_client: the folder given, emptied of value files from
    earlier runs, or else a new temporary one, removed at the end."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        yield
        return
    path = tempfile.mkdtemp(prefix="avatar-chat-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _metrics_port(settings: Settings, host: str) -> Iterator[None]:
    """With METRICS_PORT: /metrics of all workers on that port, served from here."""
    if settings.metrics_port is None or not settings.metrics_enabled:
        yield
        return
    # Imported only now that PROMETHEUS_MULTIPROC_DIR is set (see core.metrics).
    from avatar_chat.core.metrics import MetricsPortServer
    from avatar_chat.core.observability import metrics_authorization

    server = MetricsPortServer(
        host, settings.metrics_port, os.environ["PROMETHEUS_MULTIPROC_DIR"], metrics_authorization(settings)
    )
    server.start()
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    try:
        yield
    finally:
        server.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    async def run() -> None:
        rt = await runtime.prepare(settings, migrate_now=False)
        try:
            url, mode = runtime.migration_target(settings, rt.dsn)
            try:
                applied = await migrate(url, pool_mode=mode)
            except SessionRequired as exc:
                raise SystemExit(f"error: {exc}") from None
            print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        finally:
            await rt.close()

    asyncio.run(run())
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> str:
        rt = await runtime.prepare(settings)
        try:
            if rt.jwt_secret is None:
                raise SystemExit(
                    "no SUPABASE_JWT_SECRET configured: tokens for JWKS projects come from Supabase Auth"
                )
            conn = await asyncpg.connect(rt.dsn)
            try:
                user_id = await conn.fetchval(
                    "select id from auth.users where email = $1 limit 1", args.email
                )
                if user_id is None:
                    local = (
                        await conn.fetchval("select obj_description('auth.users'::regclass)")
                        == _LOCAL_AUTH_COMMENT
                    )
                    if not local:
                        raise SystemExit(f"no user {args.email}: create it with Supabase Auth first")
                    user_id = await conn.fetchval(
                        "insert into auth.users (id, email) values ($1, $2) returning id",
                        uuid.uuid4(),
                        args.email,
                    )
            finally:
                await conn.close()
            secret = rt.jwt_secret.get_secret_value()
            return mint_access_token(
                secret,
                user_id=user_id,
                email=args.email,
                ttl_s=args.ttl,
                issuer=settings.jwt_issuer,
            )
        finally:
            await rt.close()

    print(asyncio.run(run()))
    return 0


def _safety_report(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the chat package imports prometheus_client, which `serve` must not
    # have imported before it sets PROMETHEUS_MULTIPROC_DIR (see core.metrics).
    from avatar_chat.chat import safety_report

    try:
        protocol = safety_report.protocol(settings)  # MODERATION_ACTIONS may not parse: say so first
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    async def run() -> safety_report.SafetyReport:
        rt = await runtime.prepare(settings)
        try:
            conn = await asyncpg.connect(rt.dsn, statement_cache_size=0)
            try:
                counts = await safety_report.fetch_counts(conn, args.year)
            except (asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError):
                raise SystemExit(
                    "error: the database has no avatar_chat.safety_report: run `avatar-chat migrate`"
                ) from None
            finally:
                await conn.close()
        finally:
            await rt.close()
        return safety_report.build_report(args.year, counts, protocol)

    report = asyncio.run(run())
    render = safety_report.render_json if args.format == "json" else safety_report.render_text
    print(render(report))
    return 0


def _year(text: str) -> int:
    year = int(text)
    if not 1 <= year <= 9998:
        raise argparse.ArgumentTypeError(f"{text} is not a year between 1 and 9998")
    return year


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-chat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (embedded Postgres unless DATABASE_URL is set)")
    # Unset options fall back to HOST, PORT and WEB_CONCURRENCY (read through Settings).
    serve.add_argument("--host", help="bind address (HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (WEB_CONCURRENCY, default 1)")
    serve.set_defaults(run=_serve)

    mig = commands.add_parser("migrate", help="apply Supabase pieces (if missing) and pending migrations")
    mig.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a local access token for a user (created if missing)")
    token.add_argument("--email", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(run=_token)

    report = commands.add_parser(
        "safety-report",
        help="print a year's crisis referral notices (by month and category) and the safety protocol",
    )
    report.add_argument("--year", type=_year, required=True, help="the calendar year (UTC), e.g. 2026")
    report.add_argument("--format", choices=("text", "json"), default="text", help="output (default text)")
    report.set_defaults(run=_safety_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    code: int = args.run(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
