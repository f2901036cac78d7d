"""A fault-injecting HTTP proxy on 127.0.0.1 for the S3 reliability tests (issue 7).

It sits between tfaudit (boto3) and a real S3 server and forwards every request unchanged,
except those a registered :class:`Fault` matches. Faults model what networks and stores do to
a client in CI: connection resets, 503 SlowDown bursts, latency spikes, a stall mid-upload,
a response lost after the server committed the write, and canned S3 errors (AccessDenied,
RequestTimeTooSkewed, region errors) that the local servers cannot produce themselves.

Requests are parsed just enough to classify them as S3 operations (``PutObject``,
``HeadObject``, ``PutObjectRetention``, ...). The Host header is forwarded as the client
sent it, so SigV4 signatures still verify on servers that check them (Ceph RGW).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


@dataclass(frozen=True)
class Request:
    """One client request, as the proxy saw it."""

    method: str
    path: str  # without the query string, e.g. /bucket/prefix/key
    raw_query: str  # exactly as sent: the upstream checks the signature over it
    headers: Mapping[str, str]  # lower-case names

    @property
    def query(self) -> dict[str, str]:
        return {
            name: values[0] if values else ""
            for name, values in parse_qs(self.raw_query, keep_blank_values=True).items()
        }

    @property
    def key(self) -> str:
        """The object key (path-style addressing), or "" for bucket-level requests."""
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def op(self) -> str:
        """The S3 operation name this request performs (best effort, enough for tests)."""
        m, q, has_key = self.method, self.query, bool(self.key)
        if not has_key:
            if m == "HEAD":
                return "HeadBucket"
            if "versions" in q:
                return "ListObjectVersions"
            if "versioning" in q:
                return "GetBucketVersioning" if m == "GET" else "PutBucketVersioning"
            if "object-lock" in q:
                return "GetObjectLockConfiguration" if m == "GET" else "PutObjectLockConfiguration"
            return f"{m}Bucket"
        if "retention" in q:
            return "GetObjectRetention" if m == "GET" else "PutObjectRetention"
        if m == "HEAD":
            return "HeadObject"
        if m == "GET":
            return "GetObject"
        if m == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if m == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if m == "PUT" and "partNumber" in q:
            return "UploadPart"
        if m == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        if m == "PUT":
            return "PutObject"
        return f"{m}Object"

    @property
    def is_chain_write(self) -> bool:
        return self.op == "PutObject" and "/chain/" in self.path


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reset:
    """Abort the connection with a TCP RST before the request reaches the server."""

    name: str = "reset"


@dataclass(frozen=True)
class Respond:
    """Answer with an S3 error document instead of forwarding (the server never sees it)."""

    status: int
    code: str
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    name: str = "respond"


@dataclass(frozen=True)
class Delay:
    """Forward after ``seconds`` (a latency spike)."""

    seconds: float
    name: str = "delay"


@dataclass(frozen=True)
class Stall:
    """Read only part of the request body, then go silent for ``seconds`` and hang up.

    The server never sees the request; the client sees a timeout (or a reset while sending).
    """

    seconds: float
    name: str = "stall"


@dataclass(frozen=True)
class DropAfterCommit:
    """Forward the request, let the server commit it, then reset instead of answering."""

    name: str = "drop-after-commit"


Action = Reset | Respond | Delay | Stall | DropAfterCommit
Matcher = Callable[[Request], bool]


def slow_down() -> Respond:
    return Respond(503, "SlowDown", "Please reduce your request rate.")


def access_denied() -> Respond:
    return Respond(403, "AccessDenied", "Access Denied")


def clock_skewed(server_ahead: dt.timedelta = dt.timedelta(hours=1)) -> Respond:
    """What S3 answers a machine whose clock is off: 403, and its own (correct) Date."""
    server_now = dt.datetime.now(dt.timezone.utc) + server_ahead
    return Respond(
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
        headers=(("Date", email.utils.format_datetime(server_now, usegmt=True)),),
    )


def op_is(*ops: str) -> Matcher:
    return lambda request: request.op in ops


def anything(request: Request) -> bool:
    del request
    return True


@dataclass
class Fault:
    """Apply ``action`` to requests ``match`` accepts, ``times`` times (None: always)."""

    action: Action
    match: Matcher = anything
    times: int | None = 1
    skip: int = 0  # let this many matching requests through first
    fired: int = 0
    seen: int = 0

    def take(self, request: Request) -> bool:
        if not self.match(request):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class LogEntry:
    op: str
    method: str
    path: str
    action: str  # "forward" or the fault action's name
    status: int | None = None


@dataclass
class FaultProxy:
    """Forwards to ``upstream`` (``http://host:port``); faults are added while it runs."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, action: Action, match: Matcher = anything, *, times: int | None = 1,
            skip: int = 0) -> Fault:  # fmt: skip
        fault = Fault(action, match, times, skip)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def ops(self, action: str | None = None) -> list[str]:
        """Operations seen, optionally only those that got ``action``."""
        with self._lock:
            return [e.op for e in self.log if action is None or e.action == action]

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve_connection(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- connection handling -----------------------------------------------------------------
    def _choose(self, request: Request) -> Action | None:
        with self._lock:
            for fault in self.faults:
                if fault.take(request):
                    return fault.action
        return None

    def _record(self, request: Request, action: str, status: int | None = None) -> None:
        with self._lock:
            self.log.append(LogEntry(request.op, request.method, request.path, action, status))

    def _serve_connection(self, sock: socket.socket) -> None:
        rfile = sock.makefile("rb")
        try:
            while not self._stopping.is_set():
                head = _read_head(rfile)
                if head is None:
                    return
                request, length = head
                action = self._choose(request)
                if request.headers.get("expect", "").lower() == "100-continue":
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if isinstance(action, Reset):
                    self._record(request, action.name)
                    _reset(sock)
                    return
                if isinstance(action, Stall):
                    rfile.read(length // 2)
                    self._record(request, action.name)
                    self._stopping.wait(action.seconds)
                    _reset(sock)
                    return
                body = rfile.read(length) if length else b""
                if isinstance(action, Respond):
                    self._record(request, action.name, action.status)
                    sock.sendall(_error_response(request, action))
                    continue
                if isinstance(action, Delay):
                    self._stopping.wait(action.seconds)
                status, response = self._forward(request, body)
                if isinstance(action, DropAfterCommit):
                    self._record(request, action.name, status)
                    _reset(sock)
                    return
                self._record(request, action.name if action else "forward", status)
                sock.sendall(response)
                if request.headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return  # the client went away
        finally:
            rfile.close()

    def _forward(self, request: Request, body: bytes) -> tuple[int, bytes]:
        target = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
        try:
            url = request.path + (f"?{request.raw_query}" if request.raw_query else "")
            conn.putrequest(request.method, url, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.items():
                if name not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body if body else None)
            upstream = conn.getresponse()
            data = upstream.read()
            lines = [f"HTTP/1.1 {upstream.status} {upstream.reason}"]
            for name, value in upstream.getheaders():
                if name.lower() in HOP_BY_HOP:
                    continue
                if name.lower() == "content-length" and request.method != "HEAD":
                    continue  # recomputed below; HEAD keeps the object's length
                lines.append(f"{name}: {value}")
            if request.method != "HEAD":
                lines.append(f"Content-Length: {len(data)}")
            header = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            return upstream.status, header + (b"" if request.method == "HEAD" else data)
        finally:
            conn.close()


# -- wire helpers ------------------------------------------------------------------------------


def _read_head(rfile: BinaryIO) -> tuple[Request, int] | None:
    line = rfile.readline(65537)
    if not line or not line.strip():
        return None
    method, target, _version = line.decode("latin-1").split()
    headers: dict[str, str] = {}
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise OSError("chunked request bodies are not supported by the fault proxy")
    parts = urlsplit(target)
    request = Request(method, parts.path, parts.query, headers)
    return request, int(headers.get("content-length") or 0)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) so the client sees ECONNRESET, not a clean EOF."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def _error_response(request: Request, action: Respond) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{action.code}</Code><Message>{action.message}</Message>"
        f"<Resource>{request.path}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    reason = http.client.responses.get(action.status, "Error")
    lines = [f"HTTP/1.1 {action.status} {reason}", "Content-Type: application/xml"]
    names = {name.lower() for name, _ in action.headers}
    if "date" not in names:
        lines.append(f"Date: {email.utils.formatdate(time.time(), usegmt=True)}")
    lines += [f"{name}: {value}" for name, value in action.headers]
    # HEAD answers carry no body; clients then only see the status code, as with real S3.
    payload = b"" if request.method == "HEAD" else body
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@contextmanager
def running_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
