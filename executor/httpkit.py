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
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

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
        if request.content.is_eof():  # the whole body is here already: no timer needed to read it
            return await request.read()
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


class LabelChildren:
    """Prometheus label children bound once per label values: ``cache(metric, *labels)`` is
    ``metric.labels(*labels)`` without the lock and tuple building of every ``labels()`` call."""

    def __init__(self) -> None:
        self._children: dict[tuple, Any] = {}

    def __call__(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c


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


# ------------------------------------------------------------------------------------------ upstream client


class UpstreamError(Exception):
    """A failed upstream call. ``kind``: ``connection`` (refused, reset, closed before the whole answer
    arrived, malformed answer) or ``timeout``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class UpstreamResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: CIMultiDict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()


_MAX_HEAD = 64 * 1024  # bytes of an upstream answer's status line + headers


class _UpstreamConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a server: one request at a time; the answer is framed by
    ``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]):
        self.pool, self.key = pool, key
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.fut: Optional[asyncio.Future] = None
        self.closed = False
        self.counted = True  # holds one of the pool's connection slots
        self.used = 0  # requests sent on it
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Optional[CIMultiDict] = None
        self.need = -1  # body bytes (Content-Length), -1 unknown
        self.chunked = False
        self.until_close = False
        self.keep = True
        self.got_bytes = False
        self.body = bytearray()  # chunked answers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.fut is None or self.fut.done():  # nothing asked: a broken server; drop the connection
            self.close()
            return
        self.got_bytes = True
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self._fail(UpstreamError("connection", f"malformed HTTP answer ({e})"))
            self.close()

    def _parse(self) -> None:
        buf = self.buf
        while self.headers is None:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("headers too long")
                return
            lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
            del buf[: i + 4]
            version, status = lines[0].split(" ", 2)[:2]
            code = int(status)
            if 100 <= code < 200:  # an interim answer: the real one follows
                continue
            h = CIMultiDict()
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if not sep:
                    raise ValueError("header line without ':'")
                h.add(k.strip(), v.strip())
            self.status, self.headers = code, h
            self.keep = version == "HTTP/1.1" and h.get("Connection", "").lower() != "close"
            if "chunked" in h.get("Transfer-Encoding", "").lower():
                self.chunked = True
            elif "Content-Length" in h:
                self.need = int(h["Content-Length"])
                if self.need < 0:
                    raise ValueError("negative Content-Length")
            elif code in (204, 304):
                self.need = 0
            else:
                self.until_close, self.keep = True, False
        if self.chunked:
            self._parse_chunks()
        elif self.need >= 0 and len(buf) >= self.need:
            body = bytes(buf[: self.need])
            del buf[: self.need]
            self._done(body)

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            i = buf.find(b"\r\n")
            if i < 0:
                return
            n = int(bytes(buf[:i]).split(b";", 1)[0].strip() or b"x", 16)
            if n == 0:  # last chunk, then trailers up to an empty line
                j = buf.find(b"\r\n\r\n", i)
                if j < 0:
                    return
                del buf[: j + 4]
                self._done(bytes(self.body))
                return
            if len(buf) < i + 2 + n + 2:
                return
            self.body += buf[i + 2 : i + 2 + n]
            del buf[: i + 2 + n + 2]

    def _done(self, body: bytes) -> None:
        fut, self.fut = self.fut, None
        resp = UpstreamResponse(self.status, self.headers, body)  # type: ignore[arg-type]
        if self.buf:  # bytes beyond the answer: do not trust the connection again
            self.keep = False
        if fut is not None and not fut.done():
            fut.set_result(resp)

    def _fail(self, err: BaseException) -> None:
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        if self.fut is not None and not self.fut.done():
            if self.until_close and self.headers is not None:
                self.keep = False
                self._done(bytes(self.buf))
            else:
                why = f"{type(exc).__name__}: {exc}" if exc else "server closed the connection"
                self._fail(UpstreamError("connection", why))
        self.pool._forget(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self.pool._forget(self)


class _Call:
    """One upstream call's timeout: on expiry the future it awaits fails with a timeout."""

    __slots__ = ("timeout", "fut", "expired")

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.fut: Optional[asyncio.Future] = None
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(UpstreamError("timeout", f"no answer within {self.timeout:g} s"))


class UpstreamPool:
    """A small HTTP/1.1 client for the gateway's hot path: per server, keep-alive connections reused
    most-recent first (at most ``limit`` open in all; more requests wait for one), one request per
    connection at a time, the request written in one call and the answer parsed without copies beyond
    the body. ``timeout`` bounds a whole call, ``connect_timeout`` the connection set-up. A reused
    connection that the server closed before any byte of the answer (an idle keep-alive connection it
    timed out) is replaced by a new one once; every other failure raises :class:`UpstreamError`.

    It replaces aiohttp's ``ClientSession`` on the request path, whose per-request machinery (URL
    objects, cookie jar, tracing hooks, timers, payload wrappers) cost more CPU than the proxying itself."""

    def __init__(
        self, *, limit: int = 512, timeout: float = 30.0, connect_timeout: float = 1.0, idle_timeout: float = 20.0
    ):
        self.limit = max(1, int(limit))
        self.timeout, self.connect_timeout, self.idle_timeout = timeout, connect_timeout, idle_timeout
        self.open = 0
        self._idle: dict[tuple[str, int], list[_UpstreamConn]] = {}
        self._waiters: deque[asyncio.Future] = deque()
        self._addr: dict[str, tuple[str, int, str]] = {}
        self._closing = False

    def _address(self, base_url: str) -> tuple[str, int, str]:
        a = self._addr.get(base_url)
        if a is None:
            u = urlsplit(base_url)
            if u.scheme != "http" or not u.hostname:
                raise UpstreamError("connection", f"not an http:// server URL: {base_url!r}")
            port = u.port or 80
            a = self._addr[base_url] = (u.hostname, port, u.netloc)
        return a

    def _forget(self, c: _UpstreamConn) -> None:
        if c.counted:
            c.counted = False
            self.open -= 1
            idle = self._idle.get(c.key)
            if idle and c in idle:
                idle.remove(c)
            while self._waiters:
                w = self._waiters.popleft()
                if not w.done():
                    w.set_result(None)
                    break

    def _release(self, c: _UpstreamConn) -> None:
        if c.keep and not c.closed and not self._closing:
            c._reset()
            c.idle_since = time.monotonic()
            self._idle.setdefault(c.key, []).append(c)
            while self._waiters:  # a request waiting for a slot may take it (closing an idle connection)
                w = self._waiters.popleft()
                if not w.done():
                    w.set_result(None)
                    break
        else:
            c.close()

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle[0].close()  # the least recently used of that server
                return True
        return False

    async def _acquire(self, key: tuple[str, int], fresh: bool, call: _Call) -> _UpstreamConn:
        loop = asyncio.get_running_loop()
        while True:
            if not fresh:
                idle = self._idle.get(key)
                now = time.monotonic()
                while idle:
                    c = idle.pop()
                    if not c.closed and now - c.idle_since < self.idle_timeout:
                        return c
                    c.close()
            if self.open < self.limit:
                break
            if self._close_one_idle():
                continue
            w = call.fut = loop.create_future()
            self._waiters.append(w)
            await w
        self.open += 1
        c = _UpstreamConn(self, key)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: c, key[0], key[1]), self.connect_timeout)
        except asyncio.TimeoutError:
            c.close()
            raise UpstreamError("timeout", f"no connection within {self.connect_timeout:g} s") from None
        except OSError as e:
            c.close()
            raise UpstreamError("connection", f"{type(e).__name__}: {e.strerror or e}") from None
        except BaseException:
            c.close()
            raise
        if call.expired:
            c.close()
            raise UpstreamError("timeout", f"no answer within {self.timeout:g} s")
        sock = c.transport.get_extra_info("socket") if c.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        return c

    async def request(
        self, method: str, base_url: str, path: str, headers: Any = (), body: bytes = b""
    ) -> UpstreamResponse:
        """``method`` ``base_url + path`` (path already percent-encoded) with ``headers`` (pairs);
        the whole answer, or :class:`UpstreamError`."""
        host, port, netloc = self._address(base_url)
        head = [f"{method} {path} HTTP/1.1\r\nHost: {netloc}\r\n"]
        for k, v in headers:
            head.append(f"{k}: {v}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        key = (host, port)
        call = _Call(self.timeout)
        timer = loop.call_later(self.timeout, call.expire)
        try:
            fresh = False
            while True:
                c = await self._acquire(key, fresh, call)
                reused = c.used > 0
                c.used += 1
                fut = c.fut = call.fut = loop.create_future()
                if c.transport is None or c.closed:
                    raise UpstreamError("connection", "server closed the connection")
                if len(body) <= 65536:
                    c.transport.write(data + body)
                else:
                    c.transport.write(data)
                    c.transport.write(body)
                try:
                    resp = await fut
                except UpstreamError as e:
                    c.close()
                    if e.kind == "connection" and reused and not fresh and not c.got_bytes:
                        fresh = True  # a stale keep-alive connection: once more on a new one
                        continue
                    raise
                except BaseException:  # cancelled: the connection is mid-answer
                    c.close()
                    raise
                self._release(c)
                return resp
        finally:
            timer.cancel()

    async def close(self) -> None:
        self._closing = True
        for idle in list(self._idle.values()):
            for c in list(idle):
                c.close()
        self._idle.clear()


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
