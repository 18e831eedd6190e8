"""
Run the real ``twistd socketdock`` as a child process, for the journal's
crash tests: start it, read its log (stdout), SIGKILL or SIGTERM it.

Tests synchronise on log lines instead of sleeping: ``listen: listening on``
means it listens, and names the port it bound (port 0: the OS picks it); the journal's debug lines (the child runs with
``--log-level debug``) say what reached the disk.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody

import socketdock
from tests.daemon import listening_port

#: The tree whose ``socketdock`` and ``twisted/plugins`` the child runs.
TREE = os.path.dirname(os.path.dirname(os.path.abspath(socketdock.__file__)))

_RUN_TWISTD = "from twisted.scripts.twistd import run; run()"
_log = Logger()
_JOURNAL_LINE = re.compile(r"journal: (\d+) recorded, (\d+) forgotten")


class DaemonExited(Exception):
    """The child ended while a test was waiting on its log."""


class Daemon(ProcessProtocol):
    """One ``twistd -n socketdock`` child and everything it logged."""

    def __init__(self, port: int = 0) -> None:
        #: The WebSocket listener's port, known once it listens.
        self.port = port
        self.output = ""
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._ended: Failure | None = None
        self._end_waiters: list[Deferred[int | None]] = []
        self._log_waiters: list[tuple[Callable[[str], bool], Deferred[str]]] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # -- waiting ---------------------------------------------------------------

    def wait_for_log(self, predicate: Callable[[str], bool]) -> Deferred[str]:
        """Fire with the whole log once ``predicate(log)`` holds; fail if the child ends first."""
        if predicate(self.output):
            return succeed(self.output)
        d: Deferred[str] = Deferred()
        if self._ended is not None:
            d.errback(DaemonExited(self.output))
            return d
        self._log_waiters.append((predicate, d))
        return d

    def wait_for_text(self, text: str) -> Deferred[str]:
        return self.wait_for_log(lambda log: text in log)

    def journal_totals(self) -> tuple[int, int]:
        """(recorded, forgotten) as written to disk so far, from the debug lines."""
        pairs = [(int(a), int(b)) for a, b in _JOURNAL_LINE.findall(self.output)]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def wait_for_journal(self, recorded: int, forgotten: int) -> Deferred[str]:
        """Fire once at least this many records and forgets reached the disk."""
        return self.wait_for_log(
            lambda _: all(
                a >= b for a, b in zip(self.journal_totals(), (recorded, forgotten), strict=True)
            )
        )

    def ended(self) -> Deferred[int | None]:
        """Fire with the exit code (None when killed by a signal) once the child is gone."""
        if self._ended is not None:
            return succeed(self.exit_code)
        d: Deferred[int | None] = Deferred()
        self._end_waiters.append(d)
        return d

    # -- signals ---------------------------------------------------------------

    def kill(self) -> Deferred[int | None]:
        """SIGKILL: a crash, with no drain and no final journal write."""
        return self._signal(signal.SIGKILL)

    def terminate(self) -> Deferred[bool]:
        """
        SIGTERM: a graceful stop.  Fires with whether it was clean: the
        shutdown ran to its end, and the exit status is 0 or, as twistd
        re-raises the stop signal after a clean shutdown, death by SIGTERM.
        """
        return self._signal(signal.SIGTERM).addCallback(
            lambda code: (
                "Server Shut Down." in self.output
                and (code == 0 or self.exit_signal == signal.SIGTERM)
            )
        )

    def _signal(self, sig: int) -> Deferred[int | None]:
        if self._ended is None:
            assert self.transport is not None
            self.transport.signalProcess(sig)
        return self.ended()

    # -- ProcessProtocol -------------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        ready = [w for w in self._log_waiters if w[0](self.output)]
        for waiter in ready:
            self._log_waiters.remove(waiter)
            waiter[1].callback(self.output)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self._ended = reason
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            self.exit_code = reason.value.exitCode
            self.exit_signal = reason.value.signal
        waiters, self._log_waiters = self._log_waiters, []
        for _, d in waiters:
            d.errback(DaemonExited(self.output))
        ends, self._end_waiters = self._end_waiters, []
        for end in ends:
            end.callback(self.exit_code)


def start_daemon(testcase, reactor, *args: str) -> Deferred[Daemon]:
    """
    Start ``twistd -n --pidfile= socketdock --bindip 127.0.0.1 --bindport 0
    <args>`` with this tree on ``PYTHONPATH``; fire once it listens, with
    :attr:`Daemon.port` the port it bound.  The cleanup SIGKILLs it if it still
    runs and waits for it to be gone.
    """
    daemon = Daemon()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SOCKETDOCK_") or k == "SOCKETDOCK_TUNING"
    }
    env["PYTHONPATH"] = TREE
    argv = [
        sys.executable,
        "-c",
        _RUN_TWISTD,
        "-n",
        "--pidfile=",
        "socketdock",
        "--bindip",
        "127.0.0.1",
        "--bindport",
        "0",
        "--log-level",
        "debug",
        *args,
    ]
    workdir = testcase.mktemp()
    os.makedirs(workdir)
    reactor.spawnProcess(daemon, sys.executable, argv, env=env, path=workdir)
    testcase.addCleanup(daemon.kill)
    # Runs after the kill: the child's whole log lands in _trial_temp/test.log.
    testcase.addCleanup(
        lambda: _log.info(
            "twistd child on {port}:\n{output}", port=daemon.port, output=daemon.output
        )
    )
    d = daemon.wait_for_log(_listening)
    d.addCallback(lambda log: setattr(daemon, "port", listening_port(log)))
    d.addCallback(lambda _: _healthz(reactor, daemon.port))
    return d.addCallback(lambda _: daemon)


def _listening(log: str) -> bool:
    """True once the WebSocket listener's whole "listening on" line is in ``log``."""
    try:
        listening_port(log[: log.rfind("\n") + 1])
    except ValueError:
        return False
    return True


def _healthz(reactor, port: int) -> Deferred[bytes]:
    """
    GET /healthz: once it answers, the child's reactor runs.  twistd starts the
    services (and logs their lines) before it runs the reactor and installs its
    signal handlers, so a SIGTERM sent on a log line alone could find the
    default action still in place.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    d = Agent(reactor, pool=pool).request(b"GET", f"http://127.0.0.1:{port}/healthz".encode())
    return d.addCallback(readBody)
