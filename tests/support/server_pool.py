"""The session's S3 servers (moto, and Ceph RGW when selected), started on first use, and
the ``--s3-server`` choice: shared by ``tests/conftest.py`` and the tests that pick a server
kind themselves (the store contract)."""

from __future__ import annotations

import os

import pytest

from devkit.servers import S3Server, ServerUnavailable, start_ceph, start_moto

SERVER_KINDS = ("moto", "ceph")


class ServerPool:
    """Session servers, started on first use; a failed start is remembered, not retried."""

    def __init__(self, basetemp: pytest.TempPathFactory) -> None:
        self._basetemp = basetemp
        self._servers: dict[str, S3Server] = {}
        self.unavailable: dict[str, str] = {}

    def get(self, kind: str) -> S3Server:
        if kind in self.unavailable:
            raise ServerUnavailable(self.unavailable[kind])
        if kind not in self._servers:
            workdir = self._basetemp.mktemp(f"s3-{kind}")
            try:
                self._servers[kind] = start_moto(workdir) if kind == "moto" else start_ceph(workdir)
            except ServerUnavailable as exc:
                self.unavailable[kind] = str(exc)
                raise
        return self._servers[kind]

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def selected_server_kinds(config: pytest.Config) -> list[str]:
    choice = str(config.getoption("--s3-server"))
    return list(SERVER_KINDS) if choice == "both" else [choice]


def s3_server_of(pool: ServerPool, kind: str) -> S3Server:
    """The session's server of ``kind``: moto must start; Ceph may be skipped (loudly)."""
    _server_pool = pool
    try:
        return _server_pool.get(kind)
    except ServerUnavailable as exc:
        # Only Ceph (an optional system package) may be skipped; moto is a dev dependency.
        if kind != "ceph":
            pytest.fail(f"{kind} S3 server did not start: {exc}")
        if ceph_required():
            pytest.fail(f"TFAUDIT_REQUIRE_CEPH=1 but Ceph RGW is unavailable: {exc}")
        pytest.skip(f"{kind} S3 server unavailable: {exc}")


def ceph_required() -> bool:
    return os.environ.get("TFAUDIT_REQUIRE_CEPH") == "1"
