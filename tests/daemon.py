"""
Real processes for tests: SocketDock under ``twistd`` (and HAProxy), with
Deferreds for "this text appeared in the output" and "it exited".

    instance = spawn_socketdock(self, reactor, "--bindport", "0")
    port = yield Deferred.fromCoroutine(started(reactor, instance))
    instance.signal("TERM")
    code, sig = yield instance.exited

twistd runs as ``sys.executable -c "...twistd.run()"`` (``python -m
twisted.scripts.twistd`` does nothing: that module has no ``__main__``) with
``PYTHONPATH`` set to this tree, so the plugin in this tree's
``twisted/plugins`` is the one found.  The cleanup SIGKILLs whatever still
runs and waits for it, so the reactor is left clean.

Instances listen on port 0 (``--bindport 0``, ``--api-listen
tcp:0:interface=127.0.0.1``) and the test learns the ports from the
``<listener>: listening on <host>:<port>`` line each listener logs once bound:
a port picked by the test beforehand could be taken by another process first.
"""

from __future__ import annotations

import os
import re
import signal as _signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: The root of the tree under test (holds ``socketdock/`` and ``twisted/plugins``).
TREE = Path(__file__).resolve().parent.parent

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Process(ProcessProtocol):
    """
    One child process; stdout and stderr are collected together in
    :attr:`output`, and stderr alone in :attr:`errors` too.

    :ivar exited: fires with ``(exit code, signal number)`` once the process
        ended and its pipes closed; one of the two is None.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self.errors = bytearray()
        self.exited: Deferred[tuple[int | None, int | None]] = Deferred()
        self.pid: int | None = None
        self._ended: tuple[int | None, int | None] | None = None
        self._waiters: list[tuple[bytes, int, Deferred[int]]] = []

    @property
    def running(self) -> bool:
        return self._ended is None

    def text(self) -> str:
        """Everything the process printed so far."""
        return self.output.decode("utf-8", "replace")

    def wait_for(self, text: str, start: int = 0) -> Deferred[int]:
        """
        Fire, with the offset just past it, once ``text`` appears in the
        output at or after offset ``start``; fail if the process ends first.
        """
        needle = text.encode("utf-8")
        found = self.output.find(needle, start)
        if found >= 0:
            return succeed(found + len(needle))
        d: Deferred[int] = Deferred()
        if self._ended is not None:
            d.errback(ProcessGone(self, text))
            return d
        self._waiters.append((needle, start, d))
        return d

    async def port(self, name: str = "listen") -> int:
        """
        The port the listener ``name`` (``listen`` or ``api_listen``) bound, once
        it logged it; fails if the process ends first.
        """
        start = 0
        while True:  # "listen: ..." is also the tail of "api_listen: ..."
            start = await self.wait_for(f"{name}: listening on ", start)
            end = await self.wait_for("\n", start)
            try:
                return listening_port(self.output[:end].decode("utf-8", "replace"), name)
            except ValueError:
                start = end

    def count(self, text: str) -> int:
        """How often ``text`` occurs in the output so far."""
        return self.output.count(text.encode("utf-8"))

    def signal(self, name: str) -> None:
        """Send ``SIG<name>`` (``"TERM"``, ``"KILL"``, ``"USR1"``)."""
        if self.pid is not None and self.running:
            os.kill(self.pid, getattr(_signal, "SIG" + name))

    def stop(self) -> Deferred[Any]:
        """SIGKILL it if it still runs, and wait for it (for addCleanup)."""
        if self.running:
            self.signal("KILL")
        return self.exited

    # ProcessProtocol

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for waiter in list(self._waiters):
            needle, start, d = waiter
            found = self.output.find(needle, start)
            if found >= 0:
                self._waiters.remove(waiter)
                d.callback(found + len(needle))

    def errReceived(self, data: bytes) -> None:
        self.errors += data
        self.outReceived(data)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated):
            self._ended = (value.exitCode, value.signal)
        else:
            assert isinstance(value, ProcessDone)
            self._ended = (0, None)
        waiters, self._waiters = self._waiters, []
        for needle, _, d in waiters:
            d.errback(ProcessGone(self, needle.decode("utf-8")))
        self.exited.callback(self._ended)


def listening_port(log: str, name: str = "listen") -> int:
    """
    The port in the first ``<name>: listening on <host>:<port>`` line of ``log``
    (text or JSON lines, as the instance logs once a listener is bound).

    :raises ValueError: no such line.
    """
    found = re.search(r"(?<![\w])" + re.escape(name) + r": listening on \S*:(\d+)(?=\D)", log)
    if found is None:
        raise ValueError(f"no {name!r} listening line in the log")
    return int(found.group(1))


class ProcessGone(Exception):
    """The process ended before printing what a test waited for."""

    def __init__(self, process: Process, text: str) -> None:
        super().__init__(
            f"{process.name} ended ({process._ended}) before printing {text!r}; "
            f"its output:\n{process.text()[-3000:]}"
        )


def child_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without SOCKETDOCK_* (but SOCKETDOCK_TUNING) and with PYTHONPATH=tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SOCKETDOCK_") or k == "SOCKETDOCK_TUNING"
    }
    env["PYTHONPATH"] = str(TREE)
    env.update(extra or {})
    return env


def spawn(
    testcase: Any,
    reactor: Any,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    extra_fds: Mapping[int, int] | None = None,
) -> Process:
    """
    Start ``argv``; the test's cleanup kills it if it still runs.

    :param extra_fds: child fd -> parent fd, e.g. ``{3: listening.fileno()}``
        to hand a bound socket to HAProxy (``bind fd@3``).
    """
    process = Process(name)
    fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
    fds.update(extra_fds or {})
    reactor.spawnProcess(
        process,
        argv[0],
        list(argv),
        env=dict(env if env is not None else child_environ()),
        path=path,
        childFDs=fds,
    )
    testcase.addCleanup(process.stop)
    return process


def spawn_socketdock(
    testcase: Any,
    reactor: Any,
    *plugin_args: str,
    twistd_args: Sequence[str] = ("-n", "--pidfile="),
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    name: str = "socketdock",
) -> Process:
    """
    ``twistd <twistd_args> socketdock <plugin_args>`` from this tree.

    Wait for it with :func:`ready` before connecting or signalling.
    """
    argv = [*TWISTD, *twistd_args, "socketdock", *plugin_args]
    return spawn(testcase, reactor, name, argv, child_environ(env), path)


def wait_for_file(testcase: Any, reactor: Any, path: Path, text: str) -> Deferred[bytes]:
    """
    Fire, with the file's content, once ``path`` exists and holds ``text``;
    woken by inotify on its directory (Linux), so nothing polls or sleeps.
    """
    from twisted.internet import inotify
    from twisted.python.filepath import FilePath

    notifier = inotify.INotify(reactor)
    notifier.startReading()
    testcase.addCleanup(_stop_notifier, notifier)
    d: Deferred[bytes] = Deferred()
    needle = text.encode("utf-8")

    def check(*_: Any) -> None:
        if d.called or not path.exists():
            return
        content = path.read_bytes()
        if needle in content:
            _stop_notifier(notifier)
            d.callback(content)

    mask = inotify.IN_MODIFY | inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_CLOSE_WRITE
    notifier.watch(FilePath(str(path.parent)), mask=mask, callbacks=[check])
    check()
    return d


def _stop_notifier(notifier: Any) -> None:
    if notifier.connected:
        notifier.loseConnection()


def get(reactor: Any, url: str) -> Deferred[tuple[int, bytes]]:
    """One GET on a fresh connection: ``(status, body)``."""
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    d = client.get(url)
    return d.addCallback(lambda r: treq.content(r).addCallback(lambda body: (r.code, body)))


async def started(reactor: Any, process: Process, name: str = "listen") -> int:
    """
    Wait until ``process`` listens and its reactor runs, and return the port
    its listener ``name`` bound (see :func:`ready`).
    """
    port = await process.port(name)
    await ready(reactor, process, f"http://127.0.0.1:{port}")
    return port


async def ready(reactor: Any, process: Process, base_url: str) -> None:
    """
    Wait until ``process`` listens and its reactor runs: the "Site starting
    on" line, then one ``/healthz`` answered.  Only then are twistd's signal
    handlers in place (before that, SIGTERM kills it outright).
    """
    await process.wait_for("starting on")
    status, _ = await get(reactor, base_url + "/healthz")
    if status != 200:
        raise AssertionError(f"{process.name}: /healthz answered {status}")


def wait_for_exit(reactor: Any, pid: int) -> Deferred[None]:
    """
    Fire once process ``pid`` has exited, whether or not it is our child (a
    daemonized twistd is not): a Linux pidfd becomes readable then, so the
    reactor watches it like a socket; nothing polls.
    """
    from twisted.internet.interfaces import IReadDescriptor
    from zope.interface import implementer

    d: Deferred[None] = Deferred()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return succeed(None)

    @implementer(IReadDescriptor)
    class _Exit:
        def fileno(self) -> int:
            return fd

        def doRead(self) -> None:
            reactor.removeReader(self)
            os.close(fd)
            d.callback(None)

        def connectionLost(self, reason: Failure) -> None:
            pass

        def logPrefix(self) -> str:
            return f"pidfd {pid}"

    reactor.addReader(_Exit())
    return d


def wait_for_removal(testcase: Any, reactor: Any, path: Path) -> Deferred[None]:
    """Fire once ``path`` no longer exists; woken by inotify on its directory."""
    from twisted.internet import inotify
    from twisted.python.filepath import FilePath

    notifier = inotify.INotify(reactor)
    notifier.startReading()
    testcase.addCleanup(_stop_notifier, notifier)
    d: Deferred[None] = Deferred()

    def check(*_: Any) -> None:
        if not d.called and not path.exists():
            _stop_notifier(notifier)
            d.callback(None)

    mask = inotify.IN_DELETE | inotify.IN_MOVED_FROM
    notifier.watch(FilePath(str(path.parent)), mask=mask, callbacks=[check])
    check()
    return d
