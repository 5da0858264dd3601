"""The asyncio metrics endpoint, spoken to over real sockets on the test's loop."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from appliance.metrics_http import MetricsServer, start_metrics_server

T = TypeVar("T")
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def run(test: Callable[[], Awaitable[T]]) -> T:
    """Run ``test`` on a fresh loop; fail on any error the loop reported meanwhile."""
    errors: list[dict[str, Any]] = []

    # A guard against a test left waiting for ever on a bug; no test waits on real
    # time except for the server's own timeouts, set small.
    async def guarded() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        return await asyncio.wait_for(test(), timeout=20)

    result = asyncio.run(guarded())
    assert not errors, errors
    return result


def registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("demo_events", "Events seen", ["kind"], registry=r).labels("hit").inc(3)
    return r


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> Response:
    status_line = await reader.readuntil(b"\r\n")
    version, status, _ = status_line.decode().split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    n = int(headers["content-length"])
    return Response(int(status), headers, b"" if head else await reader.readexactly(n))


async def connect(server: MetricsServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def ask(server: MetricsServer, raw: bytes, head: bool = False) -> Response:
    reader, writer = await connect(server)
    writer.write(raw)
    try:
        return await read_response(reader, head)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until EOF (bounded by the test's guard); True once the server closed."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def samples(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # yields to the server's tasks on the same loop
        await asyncio.sleep(0)


def serve(**kwargs: Any) -> Callable[[Callable[[MetricsServer], Awaitable[T]]], T]:
    """Run ``test(server)`` against a fresh server on a free port, then close it."""

    def runner(test: Callable[[MetricsServer], Awaitable[T]]) -> T:
        async def main() -> T:
            server = await start_metrics_server(registry(), "127.0.0.1", 0, **kwargs)
            try:
                return await test(server)
            finally:
                await server.close()

        return run(main)

    return runner


def test_metrics_parse_and_show_the_counter() -> None:
    async def test(server: MetricsServer) -> None:
        reply = await ask(server, GET)
        assert reply.status == 200
        assert reply.headers["content-type"] == CONTENT_TYPE_LATEST
        assert "content-encoding" not in reply.headers
        assert samples(reply.body.decode())["demo_events_total"] == 3
        assert (await ask(server, b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n")).status == 200

    serve()(test)


def test_a_real_http_client_reads_it() -> None:
    async def test(server: MetricsServer) -> str:
        def fetch() -> str:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                return str(reply.read().decode())

        return await asyncio.to_thread(fetch)

    assert samples(serve()(test))["demo_events_total"] == 3


def test_gzip_when_accepted() -> None:
    async def test(server: MetricsServer) -> None:
        raw = b"GET /metrics HTTP/1.1\r\nAccept-Encoding: br, GZIP;q=0.8\r\n\r\n"
        reply = await ask(server, raw)
        assert reply.headers["content-encoding"] == "gzip"
        assert samples(gzip.decompress(reply.body).decode())["demo_events_total"] == 3

    serve()(test)


def test_head_has_headers_and_no_body() -> None:
    async def test(server: MetricsServer) -> None:
        reader, writer = await connect(server)
        writer.write(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        head = await read_response(reader, head=True)
        assert head.status == 200 and int(head.headers["content-length"]) > 0
        # Were a body sent after the head, this would read it instead of a status line.
        writer.write(GET)
        assert (await read_response(reader)).status == 200
        writer.close()

    serve()(test)


def test_404_405_and_index() -> None:
    async def test(server: MetricsServer) -> None:
        assert (await ask(server, b"GET /nope HTTP/1.1\r\n\r\n")).status == 404
        refused = await ask(server, b"DELETE /metrics HTTP/1.1\r\n\r\n")
        assert refused.status == 405 and refused.headers["allow"] == "GET, HEAD"
        index = await ask(server, b"GET / HTTP/1.1\r\n\r\n")
        assert index.status == 200 and b"/metrics" in index.body

    serve()(test)


# Nine 1 KB headers: over 8 KiB in all, though no line is.
MANY_HEADERS = b"GET /metrics HTTP/1.1\r\n" + b"".join(
    b"X-Many-%d: %s\r\n" % (i, b"a" * 1000) for i in range(9)) + b"\r\n"


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"GET metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",  # one line over 8 KiB
    MANY_HEADERS,
])
def test_malformed_requests_get_400_and_close(raw: bytes) -> None:

    async def test(server: MetricsServer) -> None:
        reader, writer = await connect(server)
        writer.write(raw)
        assert (await read_response(reader)).status == 400
        assert await closed_by_server(reader)
        writer.close()

    serve()(test)


def test_idle_and_slow_connections_are_closed() -> None:
    async def test(server: MetricsServer) -> None:
        loop = asyncio.get_running_loop()
        silent, w1 = await connect(server)
        slow, w2 = await connect(server)
        w2.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        start = loop.time()
        assert await closed_by_server(silent) and await closed_by_server(slow)
        assert loop.time() - start >= 0.15  # not before header_timeout
        # Kept alive after a request: closed once idle for idle_timeout.
        kept, w3 = await connect(server)
        w3.write(GET)
        assert (await read_response(kept)).status == 200
        assert await closed_by_server(kept)
        await until(lambda: server.open_connections == 0)
        for w in (w1, w2, w3):
            w.close()

    serve(header_timeout=0.2, idle_timeout=0.3)(test)


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def test(server: MetricsServer) -> None:
        reader, writer = await connect(server)
        writer.write(GET)
        first = await read_response(reader)
        writer.write(GET + b"GET /nope HTTP/1.1\r\n\r\n")  # pipelined
        second, third = await read_response(reader), await read_response(reader)
        assert (first.status, second.status, third.status) == (200, 200, 404)
        assert first.headers["connection"] == "keep-alive"
        writer.write(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        last = await read_response(reader)
        assert last.headers["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()
        # HTTP/1.0 closes unless asked to keep alive.
        reader, writer = await connect(server)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert (await read_response(reader)).headers["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()

    serve()(test)


def test_200_idle_connections_hold_no_thread_and_block_no_scrape() -> None:
    async def test(server: MetricsServer) -> None:
        # New threads, not a count: a thread an earlier test left may end meanwhile.
        before = set(threading.enumerate())
        idle = [await connect(server) for _ in range(200)]
        await until(lambda: server.open_connections == 200)
        assert set(threading.enumerate()) - before == set()
        reply = await ask(server, GET)
        assert reply.status == 200 and b"demo_events_total" in reply.body
        assert set(threading.enumerate()) - before == set()
        for _, writer in idle:
            writer.close()

    serve(max_connections=256)(test)


def test_at_max_connections_the_idlest_connection_makes_room() -> None:
    async def test(server: MetricsServer) -> None:
        held = [await connect(server) for _ in range(2)]
        await until(lambda: server.open_connections == 2)
        # Idle connections fill the cap (header_timeout is 60 s): a scraper is
        # still answered, in the place of the connection that waited longest.
        assert (await ask(server, GET)).status == 200
        assert server.evicted_connections == 1 and server.refused_connections == 0
        assert await closed_by_server(held[0][0])  # the first one opened: the idlest
        await until(lambda: server.open_connections == 1)
        assert (await ask(server, GET)).status == 200
        for _, writer in held:
            writer.close()

    serve(max_connections=2, header_timeout=60)(test)


def test_close_drops_open_connections_and_stops_listening() -> None:
    async def main() -> None:
        server = await start_metrics_server(registry(), "127.0.0.1", 0)
        reader, writer = await connect(server)
        await until(lambda: server.open_connections == 1)
        await server.close()
        assert await closed_by_server(reader)
        with pytest.raises(OSError):
            await connect(server)
        writer.close()
        await server.close()  # idempotent

    run(main)


def test_a_port_in_use_raises_oserror() -> None:
    async def test(server: MetricsServer) -> None:
        with pytest.raises(OSError):
            await start_metrics_server(registry(), "127.0.0.1", server.port)

    serve()(test)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def test(server: MetricsServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_ctx)
        writer.write(GET)
        assert samples((await read_response(reader)).body.decode())["demo_events_total"] == 3
        writer.close()

    serve(ssl=server_ctx)(test)
