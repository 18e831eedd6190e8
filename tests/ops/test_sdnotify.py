"""
systemd notifications (:mod:`socketdock.ops.sdnotify`): the datagrams on a
real unix socket standing in for systemd's, the moments the service sends
them, and a real daemon under a fake ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socketdock.assembly import make_service
from socketdock.config.settings import load_config
from socketdock.ops.sdnotify import Notifier, SystemdNotify, from_environ, socket_address
from tests.daemon import spawn_socketdock, started


def notify_socket(testcase: SynchronousTestCase, name: str | bytes) -> socket.socket:
    """A unix datagram socket bound at ``name``, as systemd's is; closed at cleanup."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    testcase.addCleanup(sock.close)
    sock.bind(name)
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return out


class Recorder:
    """A :class:`Notifier` stand-in that records what was sent, and when."""

    def __init__(self, moment=lambda: None) -> None:
        self.sent: list[tuple[str, Any]] = []
        self._moment = moment
        self.closed = False

    def send(self, state: str) -> None:
        self.sent.append((state, self._moment()))

    def close(self) -> None:
        self.closed = True


class NotifierTests(SynchronousTestCase):
    def test_path_socket(self) -> None:
        """A state goes as one datagram to the socket file NOTIFY_SOCKET names."""
        path = self.mktemp()
        sock = notify_socket(self, path)
        notifier = Notifier(socket_address(path))
        self.addCleanup(notifier.close)
        notifier.send("READY=1")
        notifier.send("WATCHDOG=1")
        self.assertEqual(received(sock), ["READY=1", "WATCHDOG=1"])

    def test_abstract_socket(self) -> None:
        """``@name`` is the abstract socket ``\\0name``."""
        name = f"socketdock-test-{uuid.uuid4().hex}"
        self.assertEqual(socket_address("@" + name), b"\0" + name.encode())
        sock = notify_socket(self, b"\0" + name.encode())
        notifier = Notifier(socket_address("@" + name))
        self.addCleanup(notifier.close)
        notifier.send("STOPPING=1")
        self.assertEqual(received(sock), ["STOPPING=1"])

    def test_failure_logged_once(self) -> None:
        """With nothing at the socket, sending logs one warning and raises nothing."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[arg-type]
        notifier = Notifier(socket_address(self.mktemp()))
        self.addCleanup(notifier.close)
        notifier.send("READY=1")
        notifier.send("WATCHDOG=1")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("notify socket", warnings[0]["log_format"])


class FromEnvironTests(SynchronousTestCase):
    def test_no_socket(self) -> None:
        """Outside Type=notify there is nothing to notify."""
        self.assertIsNone(from_environ({}))
        self.assertIsNone(from_environ({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "1000000"}))

    def test_watchdog(self) -> None:
        """WATCHDOG_USEC sets pings at half the period, unless WATCHDOG_PID is another process."""
        env = {"NOTIFY_SOCKET": "@x"}
        plain = from_environ(env)
        assert plain is not None
        self.assertIsNone(plain.interval)
        watched = from_environ({**env, "WATCHDOG_USEC": "30000000"}, pid=7)
        assert watched is not None
        self.assertEqual(watched.interval, 15.0)
        mine = from_environ({**env, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7)
        assert mine is not None
        self.assertEqual(mine.interval, 15.0)
        other = from_environ({**env, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7)
        assert other is not None
        self.assertIsNone(other.interval)


class ServiceTests(SynchronousTestCase):
    def test_watchdog_pings_until_stopped(self) -> None:
        """WATCHDOG=1 at start and every interval; none once stopped."""
        clock = Clock()
        recorder = Recorder()
        notify = SystemdNotify(recorder, 5.0, clock)  # type: ignore[arg-type]
        notify.startService()
        clock.advance(5)
        clock.advance(5)
        self.assertEqual([s for s, _ in recorder.sent], ["WATCHDOG=1"] * 3)
        notify.stopService()
        clock.advance(10)
        self.assertEqual(len(recorder.sent), 3)
        self.assertTrue(recorder.closed)

    def test_ready_once_every_listener_is_bound(self) -> None:
        """
        READY=1 goes once both listeners (listen, api_listen) are bound, not at
        the first; STOPPING=1 as the stop begins, while the listeners still run.
        """
        config = load_config(
            {"bindip": "127.0.0.1", "bindport": "0", "api_listen": "tcp:0:interface=127.0.0.1"},
            {},
            None,
        )
        service: Any = None
        recorder = Recorder(lambda: sorted(service.addresses))
        notify = SystemdNotify(recorder, None)  # type: ignore[arg-type]
        service = make_service(config, MemoryReactorClock(), notify=notify)
        self.assertEqual(recorder.sent, [])
        service.privilegedStartService()
        service.startService()
        self.assertEqual(
            [(s.splitlines()[0], m) for s, m in recorder.sent],
            [("READY=1", ["api_listen", "listen"])],
        )
        recorder._moment = lambda: service.addresses and all(c.running for c in service)
        self.successResultOf(service.stopService())
        self.assertEqual([s.splitlines()[0] for s, _ in recorder.sent[1:]], ["STOPPING=1"])
        self.assertTrue(recorder.sent[1][1], "STOPPING=1 only after the listeners stopped")
        self.assertTrue(recorder.closed)

    def test_no_notify(self) -> None:
        """Without systemd the service has no notifier among its children."""
        config = load_config({"bindip": "127.0.0.1", "bindport": "0"}, {}, None)
        service = make_service(config, MemoryReactorClock())
        self.assertFalse(any(isinstance(c, SystemdNotify) for c in service))


class _Inbox(DatagramProtocol):
    """Collects datagrams; ``wait_for(state)`` fires once one starts with it."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self._waiters: list[tuple[str, int, Deferred[None]]] = []

    def datagramReceived(self, data: bytes, addr: Any = None) -> None:
        self.states.append(data.decode("utf-8"))
        for waiter in list(self._waiters):
            if self.count(waiter[0]) >= waiter[1]:
                self._waiters.remove(waiter)
                waiter[2].callback(None)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states if s.splitlines()[0] == state)

    def wait_for(self, state: str, times: int = 1) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.count(state) >= times:
            d.callback(None)
        else:
            self._waiters.append((state, times, d))
        return d


class DaemonTests(TestCase):
    def test_daemon_notifies(self) -> Deferred[None]:
        """
        A real twistd under an abstract NOTIFY_SOCKET with WATCHDOG_USEC: READY=1
        (after its listener is bound), WATCHDOG=1 again and again, and on SIGTERM
        STOPPING=1 before it exits 0.
        """

        async def run() -> None:
            inbox = _Inbox()
            name = f"socketdock-notify-{uuid.uuid4().hex}"
            port = reactor.listenUNIXDatagram("\0" + name, inbox)  # type: ignore[attr-defined]
            self.addCleanup(port.stopListening)
            env = {
                "NOTIFY_SOCKET": "@" + name,
                "WATCHDOG_USEC": "200000",  # a ping every 0.1 s
                "WATCHDOG_PID": "",  # any: the child's pid is not known before it starts
            }
            instance = spawn_socketdock(
                self, reactor, "--bindip", "127.0.0.1", "--bindport", "0", env=env
            )
            await started(reactor, instance)
            await inbox.wait_for("READY=1")
            await inbox.wait_for("WATCHDOG=1", 3)
            self.assertEqual(inbox.count("STOPPING=1"), 0)
            instance.signal("TERM")
            self.assertEqual(await instance.exited, (0, None), instance.text())
            firsts = [s.splitlines()[0] for s in inbox.states]
            self.assertEqual(firsts.count("READY=1"), 1)
            self.assertEqual(firsts.count("STOPPING=1"), 1)
            self.assertLess(firsts.index("READY=1"), firsts.index("STOPPING=1"))

        return Deferred.fromCoroutine(run())
