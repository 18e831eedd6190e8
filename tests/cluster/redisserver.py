"""
A real Redis for tests: ``redis-server`` in a temporary directory, on a free
loopback port, without persistence, stopped (and waited for) in cleanup.

Redis cannot listen on port 0 and report the port, so a port that was free a
moment ago is chosen and the start retried on another if it was taken in
between.  Readiness is Redis's own "Ready to accept connections" line.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from typing import Any

from twisted.internet.defer import Deferred

from tests.daemon import Process, spawn

REDIS_SERVER = shutil.which("redis-server") or shutil.which(
    "redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin"
)

#: Why cluster tests skip where Redis or its client is absent.
NO_REDIS = (
    "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"
    if REDIS_SERVER is None
    else "txredisapi is not installed (pip install '.[cluster]')"
    if importlib.util.find_spec("txredisapi") is None
    else None
)

_READY = "Ready to accept connections"


def free_port() -> int:
    """
    A loopback port that was free a moment ago: redis-server cannot be told
    to take port 0 and say which it got, so one is picked here and the start
    retried on another if something took it in between.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ATTEMPTS = 5


class RedisServer:
    """One redis-server child process that a test can stop and start again on the same port."""

    def __init__(self, testcase: Any, reactor: Any, password: str | None = None) -> None:
        self._testcase = testcase
        self._reactor = reactor
        self._password = password
        self.directory = os.path.abspath(testcase.mktemp())
        os.makedirs(self.directory)
        self.port = 0
        self.process: Process | None = None

    def url(self, db: int = 0) -> str:
        """The ``cluster`` setting that names this server."""
        auth = f":{self._password}@" if self._password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def _argv(self) -> list[str]:
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "notice",
        ]
        if self._password:
            argv += ["--requirepass", self._password]
        return argv

    async def start(self) -> RedisServer:
        """Start on a fresh free port (retried if another process took it first)."""
        for _ in range(_ATTEMPTS):
            self.port = free_port()
            if await self._run():
                return self
        raise AssertionError(f"redis-server did not start in {_ATTEMPTS} attempts")

    async def restart(self) -> None:
        """Start again on the same port, after :meth:`stop`."""
        if not await self._run():
            assert self.process is not None  # _run keeps the process it spawned
            raise AssertionError(
                f"redis-server could not listen on {self.port} again:\n{self.process.text()}"
            )

    async def _run(self) -> bool:
        process = spawn(self._testcase, self._reactor, "redis-server", self._argv())
        self.process = process
        try:
            await process.wait_for(_READY)
        except Exception:
            if "Address already in use" in process.text():
                return False
            raise
        return True

    async def stop(self) -> None:
        """Stop it at once (SIGKILL, as a crash or an outage would) and wait for it."""
        assert self.process is not None
        await self.process.stop()


def start_redis(testcase: Any, reactor: Any, password: str | None = None) -> Deferred[RedisServer]:
    """A started :class:`RedisServer`; the test's cleanup stops it."""
    return Deferred.fromCoroutine(RedisServer(testcase, reactor, password).start())
