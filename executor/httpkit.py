"""Hardened HTTP on aiohttp, shared by the gateway, ``synergai serve`` and the daemon.

* every error is a one-line JSON body ``{"error": "..."}`` with a 4xx/5xx status (aiohttp's own
  404/405/413 included), never a traceback or a dropped connection;
* body size limit (413), body read timeout (408), header read timeout (a connection that has not
  completed its first request line + headers in time is closed: slowloris), idle keep-alive timeout;
* bounded concurrency: past ``max_inflight`` requests in progress a request is answered 503 with
  ``Retry-After`` at once (health and metrics endpoints are exempt);
* bounded connections (``max_connections``): excess connections are closed on accept;
* bearer-token authentication from a file (a mounted Secret; re-read when it changes), compared in
  constant time.

Everything is asyncio: a slow client occupies one connection object, never a thread, so it cannot
stop others from being served.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("synergai.http")

try:  # orjson is faster and rejects NaN/Infinity and out-of-range numbers by itself
    import orjson as _orjson
except ImportError:  # pragma: no cover - the serve extra installs it
    _orjson = None
import json as _json  # noqa: E402 -- the fallback of the optional import above

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


@dataclass
class HttpLimits:
    max_body: int = 64 * 1024 * 1024  # bytes (413 beyond)
    header_timeout: float = 10.0  # s to send the first request's line + headers
    body_timeout: float = 30.0  # s to send a request body (408 beyond)
    keepalive_timeout: float = 30.0  # s an idle keep-alive connection stays open
    max_inflight: int = 1024  # requests in progress (503 + Retry-After beyond)
    max_connections: int = 4096  # open connections (closed on accept beyond)


def dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
    return _json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=dumps(obj), status=status, headers=headers, content_type="application/json")


def one_line(msg: str, limit: int = 500) -> str:
    s = " ".join(str(msg).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def json_error(status: int, message: str, headers: Optional[dict] = None) -> web.Response:
    return json_response({"error": one_line(message)}, status=status, headers=headers)


class TokenAuth:
    """Bearer token read from a file (re-read when its mtime changes). No file configured: every
    protected request is refused (401), so a state change never happens unauthenticated by default."""

    def __init__(self, path: Optional[str | Path] = None, token: Optional[str] = None):
        self.path = Path(path) if path else None
        self._token: Optional[bytes] = token.encode() if token else None
        self._mtime: Optional[float] = None

    def _current(self) -> Optional[bytes]:
        if self.path is None:
            return self._token
        try:
            m = self.path.stat().st_mtime
        except OSError:
            return None
        if m != self._mtime:
            try:
                t = self.path.read_text().strip()
            except OSError:
                return None
            self._token, self._mtime = (t.encode() if t else None), m
        return self._token

    @property
    def configured(self) -> bool:
        return self._current() is not None

    def check(self, request: web.Request) -> Optional[web.Response]:
        """None when authorised, else the 401 response to send."""
        tok = self._current()
        hdr = {"WWW-Authenticate": 'Bearer realm="synergai"'}
        if tok is None:
            return json_error(
                401,
                "state-changing endpoint: no token configured on the server (start it with --token-file); refused",
                hdr,
            )
        got = request.headers.get("Authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].strip().encode(), tok):
            return json_error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", hdr)
        return None


async def read_body(request: web.Request, limits: HttpLimits) -> bytes:
    """The request body within the size and time limits (raises web.HTTPException as JSON)."""
    n = request.content_length
    if n is not None and n > limits.max_body:
        raise _JsonHTTP(413, f"body of {n} bytes exceeds the limit of {limits.max_body}")
    try:
        return await asyncio.wait_for(request.read(), limits.body_timeout)
    except asyncio.TimeoutError:
        raise _JsonHTTP(408, f"request body not received within {limits.body_timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise _JsonHTTP(413, f"body exceeds the limit of {limits.max_body} bytes") from None


class _JsonHTTP(web.HTTPException):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        self.status_code = status
        super().__init__(
            headers=headers, text=_json.dumps({"error": one_line(message)}), content_type="application/json"
        )


def http_error(status: int, message: str, headers: Optional[dict] = None) -> web.HTTPException:
    return _JsonHTTP(status, message, headers)


def make_app(
    limits: HttpLimits, *, exempt: frozenset = EXEMPT_PATHS, on_error: Optional[Callable[[int], None]] = None
) -> web.Application:
    """An aiohttp application with JSON errors and bounded concurrency."""
    state = {"inflight": 0}

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        limited = request.path not in exempt
        if limited:
            if state["inflight"] >= limits.max_inflight:
                if on_error:
                    on_error(503)
                return json_error(503, f"server busy: {limits.max_inflight} requests in progress", {"Retry-After": "1"})
            state["inflight"] += 1
        try:
            return await handler(request)
        except _JsonHTTP:
            raise
        except web.HTTPException as e:
            if e.status < 400:
                raise
            ct = e.content_type or ""
            if "json" in ct:
                raise
            return json_error(
                e.status,
                e.reason or str(e),
                {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")},
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must still answer, in one line
            log.exception("unhandled error on %s %s", request.method, request.path)
            if on_error:
                on_error(500)
            return json_error(500, f"internal error: {type(e).__name__}")
        finally:
            if limited:
                state["inflight"] -= 1

    app = web.Application(client_max_size=limits.max_body, middlewares=[guard])
    app["inflight_state"] = state
    app["limits"] = limits
    return app


def add_v2_routes(app: web.Application, h: Any) -> None:
    """The Open Inference Protocol routes (+ /healthz, /readyz, /metrics) bound to the methods of ``h``:
    ``live``, ``ready``, ``metrics`` (or ``metrics_h``), ``server_meta``, ``model_meta``, ``model_ready``, ``infer``."""
    g, p = app.router.add_get, app.router.add_post
    for path in ("/healthz", "/v2/health/live"):
        g(path, h.live)
    for path in ("/readyz", "/v2/health/ready"):
        g(path, h.ready)
    g("/metrics", getattr(h, "metrics_h", None) or h.metrics)
    g("/v2", h.server_meta)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        g(base, h.model_meta)
        g(base + "/ready", h.model_ready)
        p(base + "/infer", h.infer)


async def prometheus(registry: Any) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


class _GuardedHandler(RequestHandler):
    """aiohttp's handler plus a header read timeout and a connection cap."""

    _hdr_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        mgr = self._manager
        limits: HttpLimits = getattr(mgr, "_synergai_limits", None) or HttpLimits()
        if mgr is not None and len(getattr(mgr, "connections", ())) > limits.max_connections:
            transport.close()
            return
        self._hdr_timer = self._loop.call_later(limits.header_timeout, self._header_expired)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._hdr_timer is not None and getattr(self, "_request_count", 1) > 0:
            self._hdr_timer.cancel()
            self._hdr_timer = None

    def _header_expired(self) -> None:
        self._hdr_timer = None
        if getattr(self, "_request_count", 1) == 0 and self.transport is not None:
            log.debug("closing a connection that sent no complete request headers in time")
            self.force_close()
            self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._hdr_timer is not None:
            self._hdr_timer.cancel()
            self._hdr_timer = None
        super().connection_lost(exc)


class _GuardedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


def bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1024)
    s.setblocking(False)
    return s


async def start(app: web.Application, host: str, port: int, limits: HttpLimits) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.keepalive_timeout,
        max_line_size=8190,
        max_field_size=8190,
        handle_signals=False,
    )
    await runner.setup()
    srv = runner.server
    srv.__class__ = _GuardedServer
    srv._synergai_limits = limits  # type: ignore[attr-defined]
    sock = bind(host, port)
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    return runner, sock.getsockname()[1]


def write_port_file(port_file: Optional[str], port: int) -> None:
    if port_file:
        tmp = f"{port_file}.tmp{os.getpid()}"
        Path(tmp).write_text(str(port))
        os.replace(tmp, port_file)


def run_main(
    app_factory: Callable[[], web.Application],
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    label: str,
    port_file: Optional[str] = None,
    before: Optional[Callable[[], Awaitable[None]]] = None,
    after_listen: Optional[Callable[[], Awaitable[None]]] = None,
    cleanup: Optional[Callable[[], Awaitable[None]]] = None,
) -> int:
    """Process entry of an aiohttp service: ``before`` -> listen (port file, one stdout line) ->
    ``after_listen`` (e.g. load models) -> wait for SIGTERM/SIGINT -> stop listening -> ``cleanup``."""

    async def main() -> None:
        if before is not None:
            await before()
        runner, bound = await start(app_factory(), host, port, limits)
        write_port_file(port_file, bound)
        print(f"{label}: listening on http://{host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if after_listen is not None:
                await after_listen()
            await stop.wait()
        finally:
            await runner.cleanup()
            if cleanup is not None:
                await cleanup()

    try:  # uvloop when installed
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(main())
    return 0


class ThreadedServer:
    """An aiohttp app served by an event loop in a background thread (for threaded programs: the daemon)."""

    def __init__(self, app_factory: Callable[[], web.Application], host: str, port: int, limits: HttpLimits):
        self.app_factory, self.host, self.port_wanted, self.limits = app_factory, host, port, limits
        self.loop = asyncio.new_event_loop()
        self.port: Optional[int] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._runner, self.port = self.loop.run_until_complete(
                start(self.app_factory(), self.host, self.port_wanted, self.limits)
            )
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        try:
            self.loop.run_until_complete(self._runner.cleanup())
        finally:
            self.loop.close()

    def start(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def env_default(name: str, default: Optional[str] = None) -> Optional[str]:
    v = os.environ.get(name)
    return v if v not in (None, "") else default
