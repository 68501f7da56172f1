"""The gateway's upstream HTTP/1.1 client (``executor.httpkit.UpstreamPool``) against raw asyncio servers
that answer exactly as scripted: keep-alive reuse, every body framing, stale keep-alive connections,
timeouts, refused connections, the connection limit and malformed answers."""

from __future__ import annotations

import asyncio
import socket

import pytest

pytest.importorskip("aiohttp")

from synergai.executor.httpkit import UpstreamError, UpstreamPool  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def ok(body: bytes = b"hi", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n%s\r\n%s" % (len(body), extra, body)


class Scripted:
    """A server that reads one request (head + Content-Length body) at a time and answers with the
    next of ``answers`` (bytes, or a callable(writer) coroutine); counts connections and requests."""

    def __init__(self, answers, close_after_each: bool = False):
        self.answers = list(answers)
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                body = await reader.readexactly(n)
                self.requests.append(head + body)
                a = self.answers.pop(0) if self.answers else ok()
                if callable(a):
                    await a(writer)
                else:
                    writer.write(a)
                    await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_keep_alive_reuse_and_request_bytes():
    async def main():
        async with Scripted([ok(b"one"), ok(b"two")]) as s:
            pool = UpstreamPool()
            r1 = await pool.request("POST", s.url, "/v2/models/a%2Fb/infer", [("X-Deadline-Ms", "50")], b"{}")
            r2 = await pool.request("POST", s.url, "/p", [], b"xyz")
            await pool.close()
            assert (r1.status, r1.body, r1.headers["x-a"]) == (200, b"one", "1")
            assert r2.body == b"two"
            assert s.connections == 1  # the second request reused the connection
            req = s.requests[0]
            assert req.startswith(b"POST /v2/models/a%2Fb/infer HTTP/1.1\r\n")
            assert b"\r\nX-Deadline-Ms: 50\r\n" in req and b"\r\nContent-Length: 2\r\n" in req
            assert req.endswith(b"\r\n\r\n{}")

    run(main())


def test_body_framings():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after")
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nto the end"

    async def main():
        async with Scripted([chunked, interim, b"HTTP/1.1 204 No Content\r\n\r\n"]) as s:
            pool = UpstreamPool()
            assert (await pool.request("GET", s.url, "/c")).body == b"abcde"
            assert (await pool.request("GET", s.url, "/i")).body == b"after"
            r = await pool.request("GET", s.url, "/n")
            assert (r.status, r.body) == (204, b"")
            assert s.connections == 1
            await pool.close()
        async with Scripted([until_close], close_after_each=True) as s:
            pool = UpstreamPool()
            r = await pool.request("GET", s.url, "/u")
            assert (r.body, r.content_type) == (b"to the end", "text/plain")
            assert pool.open == 0  # not kept: its end was the connection's
            await pool.close()

    run(main())


def test_stale_keep_alive_connection_is_replaced_once():
    async def drop(writer):  # a keep-alive connection the server times out just as a request arrives
        writer.transport.abort()

    async def main():
        async with Scripted([ok(b"a"), ok(b"b")], close_after_each=True) as s:
            pool = UpstreamPool()
            assert (await pool.request("POST", s.url, "/", [], b"1")).body == b"a"
            await asyncio.sleep(0.05)  # closed by the server while idle: noticed, not reused
            assert (await pool.request("POST", s.url, "/", [], b"2")).body == b"b"
            assert s.connections == 2
            await pool.close()
        async with Scripted([ok(b"a"), drop, ok(b"b")]) as s:
            pool = UpstreamPool()
            assert (await pool.request("POST", s.url, "/", [], b"1")).body == b"a"
            assert (await pool.request("POST", s.url, "/", [], b"2")).body == b"b"  # sent again on a new one
            assert s.connections == 2 and len(s.requests) == 3
            await pool.close()
        async with Scripted([drop]) as s:  # a new connection dropped: an error, not sent twice
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as e:
                await pool.request("POST", s.url, "/", [], b"1")
            assert e.value.kind == "connection" and len(s.requests) == 1
            await pool.close()

    run(main())


def test_server_dying_mid_request_is_a_connection_error():
    async def die(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async def main():
        async with Scripted([die]) as s:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as e:
                await pool.request("POST", s.url, "/", [], b"x")
            assert e.value.kind == "connection"
            assert pool.open == 0
            await pool.close()

    run(main())


def test_timeout_refused_and_malformed():
    async def never(writer):
        await asyncio.sleep(10)

    async def main():
        async with Scripted([never]) as s:
            pool = UpstreamPool(timeout=0.3)
            t = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamError) as e:
                await pool.request("POST", s.url, "/", [], b"x")
            assert e.value.kind == "timeout" and asyncio.get_running_loop().time() - t < 2
            assert pool.open == 0
            await pool.close()
        with socket.socket() as sk:  # a port nobody listens on
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        pool = UpstreamPool()
        with pytest.raises(UpstreamError) as e:
            await pool.request("GET", f"http://127.0.0.1:{port}", "/")
        assert e.value.kind == "connection" and pool.open == 0
        async with Scripted([b"NONSENSE\r\n\r\n"]) as s:
            with pytest.raises(UpstreamError) as e:
                await pool.request("GET", s.url, "/")
            assert e.value.kind == "connection"
        await pool.close()

    run(main())


def test_connection_limit_queues_requests():
    async def slow(writer):
        await asyncio.sleep(0.1)
        writer.write(ok(b"slow"))
        await writer.drain()

    async def main():
        async with Scripted([slow, slow, slow]) as s:
            pool = UpstreamPool(limit=1)
            rs = await asyncio.gather(*(pool.request("POST", s.url, "/", [], b"x") for _ in range(3)))
            assert [r.body for r in rs] == [b"slow"] * 3
            assert s.connections == 1 and pool.open <= 1
            await pool.close()

    run(main())
