"""Logging: the request id on every line, text for a terminal or JSON lines for a collector.

`REQUEST_ID` holds the id of the request being served (set by `core.observability`);
tasks spawned while serving it copy it (asyncio copies context variables into new
tasks), so a reply generated in the background logs with the id of the send that
started it. `RequestIdFilter`, on every handler this module configures, puts it on each
record as `request_id` (None outside a request).

`logging_config(settings)` is one `logging.config.dictConfig` dict for the command line
and for every uvicorn worker (cli.py hands it to uvicorn, which applies it in each worker
process). What is logged never holds tokens, keys or message content: the access log
has no query strings (signed URLs carry tokens there), and libraries that log request
bodies or headers at DEBUG (the OpenAI SDK, httpx, httpcore) are kept above that level.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from avatar_chat.core.settings import LogFormat

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (the current request's, or None) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            setattr(record, "request_id", REQUEST_ID.get())  # noqa: B010
        return True


def _escape(char: int) -> str:
    name = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(chr(char))
    return name or (f"\\x{char:02x}" if char < 0x100 else f"\\u{char:04x}")


# What could end a line or rewrite what a terminal shows: C0 and C1 controls and DEL
# (newlines, ESC for terminal escapes), Unicode line and paragraph separators, and the
# bidirectional overrides that make text read differently from how it is stored.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPE_ALL = str.maketrans({char: _escape(char) for char in _UNSAFE})
# Tracebacks keep their line breaks (each of their lines comes from our code or Python's).
_ESCAPE_BUT_NEWLINES = str.maketrans({char: _escape(char) for char in _UNSAFE if char != ord("\n")})


def escape_controls(text: str) -> str:
    """`text` with every character that could forge a log line or drive a terminal written
    as an escape (`\\n`, `\\x1b`, `\\u2028`): one record is one line, whatever a client sent."""
    return text if text.isprintable() else text.translate(_ESCAPE_ALL)


class TextFormatter(logging.Formatter):
    """`time level logger [pid] request-id message`, with `-` outside a request.

    Messages carry values clients chose (the access log's path, above all): control
    characters in them are escaped, so a client can neither forge a line nor put terminal
    escapes in one. JSON lines need none of this (json.dumps escapes them)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(rid)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        setattr(record, "rid", getattr(record, "request_id", None) or "-")  # noqa: B010
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return super().formatException(ei).translate(_ESCAPE_BUT_NEWLINES)

    def formatStack(self, stack_info: str) -> str:
        return super().formatStack(stack_info).translate(_ESCAPE_BUT_NEWLINES)


# Attributes every LogRecord has; anything else on a record came as `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "rid",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id,
    process, the record's `extra=` fields, and `exception` (the traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


# Libraries that log what must not be logged below these levels: HTTP clients log URLs
# with their query strings at INFO and headers at DEBUG (httpx and httpcore; httpx2 and
# httpcore2 under the OpenAI SDK), and SDKs have logged request options (the prompt) at
# DEBUG. Their records below these levels are dropped whatever LOG_LEVEL says.
_LIBRARY_FLOORS = {
    "openai": logging.INFO,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "httpx2": logging.WARNING,
    "httpcore2": logging.WARNING,
    "hpack": logging.WARNING,
    "python_multipart": logging.WARNING,
    "PIL": logging.INFO,
}


def level_number(level: str) -> int:
    """LOG_LEVEL as a number; unknown names and anything below DEBUG (uvicorn's TRACE logs
    raw ASGI messages) count as DEBUG."""
    value = logging.getLevelName(level.upper())
    return max(value, logging.DEBUG) if isinstance(value, int) else logging.DEBUG


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The whole logging set-up: one stderr handler on the root logger, every logger
    (uvicorn's too) propagating to it; uvicorn's own access log is replaced by ours."""
    number = level_number(level)
    formatter = "json" if log_format is LogFormat.json else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["request_id"],
            }
        },
        "root": {"level": number, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn configures these with handlers of its own by default: ours instead.
            "uvicorn": {"level": number, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": number, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": logging.WARNING, "handlers": [], "propagate": False},
            **{
                name: {"level": max(number, floor), "handlers": [], "propagate": True}
                for name, floor in _LIBRARY_FLOORS.items()
            },
        },
    }


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Apply `logging_config` to this process; warnings become log records too."""
    logging.config.dictConfig(logging_config(level, log_format))
    logging.captureWarnings(True)
