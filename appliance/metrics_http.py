"""The Prometheus metrics endpoint: a minimal HTTP/1.1 server on the event loop.

``prometheus_client.start_http_server`` runs one thread per connection with no
timeout, so a client holding idle connections holds as many threads forever.
Here a connection is a task on the server's event loop: it must send its
request head in time or is closed. At ``max_connections`` a new connection
takes the place of the one that has waited longest for a request (a hostile
client holding idle connections cannot keep a scraper out: the scraper sends
its request at once, the idle ones wait); it is closed only when every open
connection is busy answering. No threads.

Only what a scraper needs: GET/HEAD ``/metrics`` (gzip when accepted), a small
page at ``/``, keep-alive. No request bodies, no chunked encoding.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl as _ssl
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, gzip_accepted

log = logging.getLogger(__name__)

# The request line and headers together; larger is refused (400). A scraper
# sends a few hundred bytes. Also the StreamReader's limit, so no longer line
# is ever buffered whole.
MAX_HEAD_BYTES = 8192

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}
_INDEX = b"<html><body><a href=\"/metrics\">/metrics</a></body></html>\n"
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class BadRequest(Exception):
    """The request cannot be parsed: answer 400 and close."""


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lowercased names; repeated headers joined with ", "

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def _parse(lines: list[bytes]) -> _Request:
    """The request line and header lines (each with its line end) -> a request."""
    try:
        method, target, version = lines[0].decode("ascii").rstrip("\r\n").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("malformed request line") from None
    if not method or not set(method) <= _TOKEN or version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest("malformed request line")
    if target.startswith(("http://", "https://")):  # absolute form, as a proxy sends
        target = urlsplit(target).path or "/"
    if not target.startswith("/"):
        raise BadRequest("malformed request target")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").rstrip("\r\n").partition(":")
        # No space before the colon and no folded lines (RFC 9112 5.1, 5.2): both
        # are old tricks to make a proxy and a server read different headers.
        if not sep or not name or not set(name) <= _TOKEN:
            raise BadRequest("malformed header")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    # A body we would not read would be taken for the next request: refuse it.
    if "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0":
        raise BadRequest("request bodies are not accepted")
    return _Request(method, target.split("?", 1)[0], version, headers)


class MetricsServer:
    """A running endpoint; from ``start_metrics_server``."""

    def __init__(self, registry: CollectorRegistry, max_connections: int,
                 header_timeout: float, idle_timeout: float) -> None:
        self.registry = registry
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.port = 0
        # Connections closed at once because max_connections were open.
        self.refused_connections = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        # Connections waiting for a request head, and since when (loop time).
        self._waiting: dict[asyncio.Task[None], float] = {}
        # Connections closed to make room for a new one.
        self.evicted_connections = 0

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting the sockets ends each connection's task through its own error
        # path. Not task.cancel(): Python 3.11's start_server logs a cancelled
        # connection task as an error ("Exception in callback ... CancelledError").
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None and len(self._connections) >= self.max_connections and self._waiting:
            idlest = min(self._waiting, key=self._waiting.__getitem__)
            self._waiting.pop(idlest)
            self._connections[idlest].transport.abort()  # its task ends on the error
            self._connections.pop(idlest, None)
            self.evicted_connections += 1
        if task is None or len(self._connections) >= self.max_connections:
            self.refused_connections += 1
            writer.transport.abort()
            return
        self._connections[task] = writer  # counted until the socket is closed
        try:
            await self._serve(reader, writer)
            # close() flushes what is buffered first, for as long as the client
            # takes to read it: bounded too.
            writer.close()
            async with asyncio.timeout(self.idle_timeout):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or was too slow: nothing to answer
        except Exception:
            log.exception("metrics endpoint: unexpected error")
        finally:
            self._connections.pop(task, None)
            self._waiting.pop(task, None)
            writer.transport.abort()  # at once, unsent data or not; no-op once closed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests until the client or an error ends the connection."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        first = True
        while True:
            # A new connection has header_timeout for its whole first head; between
            # requests a kept-alive one has idle_timeout to start the next, then
            # header_timeout to finish it.
            self._waiting[task] = loop.time()
            try:
                async with asyncio.timeout(self.header_timeout if first else self.idle_timeout) \
                        as deadline:
                    lines = await self._read_head(reader, deadline, loop, first)
                self._waiting.pop(task, None)
                request = _parse(lines)
            except asyncio.LimitOverrunError:  # one line longer than the reader's limit
                await self._send(writer, 400, b"request head over 8 KiB\n", keep_alive=False)
                return
            except BadRequest as exc:
                await self._send(writer, 400, f"{exc}\n".encode(), keep_alive=False)
                return
            first = False
            try:
                keep_alive = await self._answer(writer, request)
            except (ConnectionError, TimeoutError):
                raise
            except Exception:
                log.exception("metrics endpoint: cannot answer %s", request.path)
                await self._send(writer, 500, b"internal error\n", keep_alive=False)
                return
            if not keep_alive:
                return

    async def _read_head(self, reader: asyncio.StreamReader, deadline: asyncio.Timeout,
                         loop: asyncio.AbstractEventLoop, first: bool) -> list[bytes]:
        line = await reader.readuntil(b"\n")
        while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore blank lines before a request
            line = await reader.readuntil(b"\n")
        if not first:
            deadline.reschedule(loop.time() + self.header_timeout)
        lines, size = [line], len(line)
        while True:
            line = await reader.readuntil(b"\n")
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise BadRequest("request head over 8 KiB")
            if line in (b"\r\n", b"\n"):
                return lines
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("folded header line")
            lines.append(line)

    async def _answer(self, writer: asyncio.StreamWriter, request: _Request) -> bool:
        """Send the response; whether the connection stays open."""
        keep = request.keep_alive
        if request.method not in ("GET", "HEAD"):
            await self._send(writer, 405, b"only GET and HEAD\n", keep, [("Allow", "GET, HEAD")])
        elif request.path == "/metrics":
            # On the loop, measured on a 2-core VM: generate_latest takes ~5 us a
            # sample: 2.5-3.3 ms for 500 samples, 1.8 ms for this app's registry
            # fully labelled (310 samples), +0.2-0.6 ms to gzip. A thread would not
            # make it cheaper (pure Python, it holds the GIL) and a scraper asks
            # every 15 s or so; a client asking in a loop costs that per request.
            body = generate_latest(self.registry)
            extra = [("Vary", "Accept-Encoding")]
            if gzip_accepted(request.headers.get("accept-encoding", "")):
                body = gzip.compress(body)
                extra.append(("Content-Encoding", "gzip"))
            await self._send(writer, 200, body, keep, extra, CONTENT_TYPE_LATEST,
                             head=request.method == "HEAD")
        elif request.path == "/":
            await self._send(writer, 200, _INDEX, keep, content_type="text/html; charset=utf-8",
                             head=request.method == "HEAD")
        else:
            await self._send(writer, 404, b"not found\n", keep, head=request.method == "HEAD")
        return keep

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                    keep_alive: bool, extra: list[tuple[str, str]] | None = None,
                    content_type: str = "text/plain; charset=utf-8", head: bool = False) -> None:
        headers = [("Date", formatdate(usegmt=True)), ("Content-Type", content_type),
                   ("Content-Length", str(len(body))), *(extra or []),
                   ("Connection", "keep-alive" if keep_alive else "close")]
        text = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        writer.write(text.encode("latin-1") + (b"" if head else body))
        # A client that stops reading must not hold the response's buffer for ever.
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()


async def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int, *, max_connections: int = 64,
    header_timeout: float = 5.0, idle_timeout: float = 30.0, ssl: _ssl.SSLContext | None = None,
) -> MetricsServer:
    """Serve ``registry`` on host:port (0: a free port, in ``.port``); OSError if it cannot bind."""
    metrics = MetricsServer(registry, max_connections, header_timeout, idle_timeout)
    # The TLS handshake comes before the connection is ours (and counted): bound it too.
    server = await asyncio.start_server(
        metrics._connection, host, port, limit=MAX_HEAD_BYTES, ssl=ssl,
        ssl_handshake_timeout=None if ssl is None else header_timeout,
    )
    metrics._server = server
    metrics.port = server.sockets[0].getsockname()[1]
    return metrics
