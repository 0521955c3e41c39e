"""Prometheus metrics: every metric this service reports, and their exposition.

One `Metrics` per app (created in `create_app`), with its own registry, so that apps in
one process (tests) count apart. Components get small bundles of labelled children made
once (`PoolMetrics`, `StoreMetrics` here; a domain registers its own in the same registry,
as `chat.metrics.ChatMetrics` does), so recording is an `inc()` or an `observe()` of a few
microseconds, never a label lookup; with METRICS_ENABLED=false the bundles hold no-op
stand-ins and nothing is recorded.

Several workers: `avatar-chat serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder
before its workers start; prometheus_client then keeps every value in a per-process file
there, and `/metrics`, on whichever worker answers, merges all of them (the
MultiProcessCollector). Gauges sum over the live workers (`livesum`); the files of a
worker that died are dropped from the gauges at the next scrape (its counters and
histograms stay, so totals never go back). That env variable must be set before
prometheus_client is first imported: it picks its value store at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hmac
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# The label of requests no route handled: unknown paths, and refusals before routing
# (a 413 by Content-Length). Routes are labelled by template, so the label set is bounded.
UNMATCHED_ROUTE: Final = "unmatched"

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ACQUIRE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

STORE_RESULTS: Final = ("hit", "miss", "stale")
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Incrementer(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class Setter(Protocol):
    def set(self, value: float) -> None: ...


class _Off:
    """What every child is with METRICS_ENABLED=false."""

    def inc(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None

    def set(self, value: float) -> None:
        return None


OFF: Final = _Off()


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """core.database: how long getting a pooled connection took, and why it failed."""

    acquire_seconds: Observer = OFF
    acquire_timeouts: Incrementer = OFF
    acquire_unavailable: Incrementer = OFF


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    """cache.store: a turn's lookups (hit, miss: nothing cached, stale: cached but its
    version stamp no longer matched, so it was reloaded) and LRU evictions, by kind."""

    avatar: dict[str, Incrementer] = field(default_factory=lambda: dict.fromkeys(STORE_RESULTS, OFF))
    window: dict[str, Incrementer] = field(default_factory=lambda: dict.fromkeys(STORE_RESULTS, OFF))
    avatar_evictions: Incrementer = OFF
    window_evictions: Incrementer = OFF


class Labelled:
    """Children of a family by label values, made on first use (values come from our own
    constants, e.g. provider failure codes or moderation categories, so they stay few)."""

    def __init__(self, family: Counter | None) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], Incrementer] = {}

    def __call__(self, *values: str) -> Incrementer:
        child = self._children.get(values)
        if child is None:
            child = OFF if self._family is None else self._family.labels(*values)
            self._children[values] = child
        return child


def multiprocess_dir() -> str | None:
    """The folder of the per-process value files, when several workers share the metrics."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiproc = multiprocess_dir() if enabled else None
        if enabled and bool(self._multiproc) != bool(getattr(values.ValueClass, "_multiprocess", False)):
            raise RuntimeError(
                f"prometheus_client was imported before {MULTIPROC_ENV} was set (or unset): "
                "it chooses where values live at import time"
            )
        self._gauges: list[tuple[Setter, Callable[[], float]]] = []
        self._http: dict[tuple[str, str, int], Observer] = {}
        if not enabled:
            self.pool = PoolMetrics()
            self.store = StoreMetrics()
            return
        self.http_requests = Histogram(
            "avatar_chat_http_request_duration_seconds",
            "HTTP requests by method, route template and status: time to the end of the answer"
            " (of the stream for SSE); _count is the number of requests.",
            ("method", "route", "status"),
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.store = self._store_metrics()
        self.pool = self._pool_metrics()
        self._workers = Gauge(
            "avatar_chat_workers",
            "Live worker processes reporting.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._workers.set(1)

    def _store_metrics(self) -> StoreMetrics:
        r = self.registry
        lookups = Counter(
            "avatar_chat_session_store_lookups",
            "SessionStore lookups of chat turns by kind (avatar, window) and result: hit, miss"
            " (nothing cached), stale (cached, but its version stamp no longer matched: reloaded).",
            ("kind", "result"),
            registry=r,
        )
        evictions = Counter(
            "avatar_chat_session_store_evictions",
            "SessionStore entries dropped by its LRU bound, by kind.",
            ("kind",),
            registry=r,
        )
        self._entries = Gauge(
            "avatar_chat_session_store_entries",
            "SessionStore entries, by kind (summed over live workers).",
            ("kind",),
            registry=r,
            multiprocess_mode="livesum",
        )
        return StoreMetrics(
            avatar={result: lookups.labels("avatar", result) for result in STORE_RESULTS},
            window={result: lookups.labels("window", result) for result in STORE_RESULTS},
            avatar_evictions=evictions.labels("avatar"),
            window_evictions=evictions.labels("window"),
        )

    def _pool_metrics(self) -> PoolMetrics:
        r = self.registry
        acquire = Histogram(
            "avatar_chat_db_pool_acquire_duration_seconds",
            "Waiting for a pooled database connection.",
            buckets=_ACQUIRE_BUCKETS,
            registry=r,
        )
        acquire_errors = Counter(
            "avatar_chat_db_pool_acquire_errors",
            "Pooled connections not obtained: timeout (DB_ACQUIRE_TIMEOUT_S passed) or"
            " unavailable (a new connection could not be opened).",
            ("reason",),
            registry=r,
        )
        self._pool_size = Gauge(
            "avatar_chat_db_pool_connections",
            "Open pooled database connections (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pool_in_use = Gauge(
            "avatar_chat_db_pool_connections_in_use",
            "Pooled database connections lent out (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pool_max = Gauge(
            "avatar_chat_db_pool_max_connections",
            "DB_POOL_MAX_SIZE, summed over live workers.",
            registry=r,
            multiprocess_mode="livesum",
        )
        return PoolMetrics(
            acquire_seconds=acquire,
            acquire_timeouts=acquire_errors.labels("timeout"),
            acquire_unavailable=acquire_errors.labels("unavailable"),
        )

    # --- what the request middleware records ---------------------------------------------

    def http_request(self, method: str, route: str, status: int) -> Observer:
        """The latency histogram's child for one method, route template and status. Keyed
        by the normalised method: a client may send any token as a method (h11 takes them
        all), and neither the children nor this cache may grow with what clients invent."""
        if method not in _HTTP_METHODS:
            method = "OTHER"
        key = (method, route, status)
        child = self._http.get(key)
        if child is None:
            child = self.http_requests.labels(method, route, str(status))  # only called when enabled
            self._http[key] = child
        return child

    # --- gauges, sampled -------------------------------------------------------------------

    def watch_pool(self, size: Callable[[], int], idle: Callable[[], int], max_size: int) -> None:
        if self.enabled:
            self._pool_max.set(max_size)
            self._gauges += [(self._pool_size, size), (self._pool_in_use, lambda: size() - idle())]

    def watch_store(self, avatars: Callable[[], int], windows: Callable[[], int]) -> None:
        if self.enabled:
            self._gauges += [
                (self._entries.labels("avatar"), avatars),
                (self._entries.labels("window"), windows),
            ]

    def sample(self) -> None:
        """Bring this worker's gauges up to date (each worker does so every second, and the
        one answering a scrape right before it)."""
        for gauge, read in self._gauges:
            gauge.set(read())

    @contextlib.asynccontextmanager
    async def sampling(self, interval_s: float = 1.0) -> AsyncIterator[None]:
        """While inside (the lifespan), sample the gauges every `interval_s`: they change on
        every request, so they are sampled rather than written on the hot path."""
        if not self._gauges:
            yield
            return

        async def run() -> None:
            while True:
                self.sample()
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(run(), name="metrics-sampler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition: all workers' values in multiprocess mode, else this app's."""
        self.sample()
        if self._multiproc is None:
            return generate_latest(self.registry)
        return render_multiprocess(self._multiproc)


def render_multiprocess(path: str) -> bytes:
    """Every worker's values from the files in `path` (also from a process that records
    none itself: the supervisor serving METRICS_PORT)."""
    forget_dead_workers(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def forget_dead_workers(path: str) -> None:
    """Drop the live-gauge files of processes that no longer exist (a worker that crashed
    and was replaced), so gauges sum over live workers only. A pid reused by an unrelated
    process keeps its predecessor's gauges until that process ends too."""
    files = glob.glob(os.path.join(path, "gauge_live*_*.db"))
    pids = {int(m.group(1)) for f in files if (m := _LIVE_GAUGE_FILE.search(f))}
    for pid in pids:
        if not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class MetricsPortServer:
    """`/metrics` of every worker on a port of its own (METRICS_PORT), served by
    `avatar-chat serve`'s supervisor from the workers' value files, in a thread."""

    def __init__(self, host: str, port: int, path: str, authorization: bytes | None) -> None:
        self._path = path
        self._authorization = authorization
        self._server = make_server(host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-port", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _plain(start_response, "404 Not Found", b"not found\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", b"method not allowed\n")
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1")
        if self._authorization is not None and not hmac.compare_digest(given, self._authorization):
            return _plain(
                start_response,
                "401 Unauthorized",
                b"Send Authorization: Bearer <METRICS_TOKEN>.\n",
                [("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
        body = render_multiprocess(self._path)
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPE),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]


def _plain(
    start_response: StartResponse, status: str, body: bytes, headers: list[tuple[str, str]] | None = None
) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *(headers or [])]
    )
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None
