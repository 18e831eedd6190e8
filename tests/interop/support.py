"""
Run a real client stack as a subprocess and follow what it reports.

The Node and Python clients (``client.js``, ``client_websockets.py``) print
one JSON object per line; :class:`ClientProcess` turns each into an event a
test can wait on. :class:`ClientScenarios` holds the checks every stack must
pass, so each stack's test module only says how to start its client.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.harness import RunningRelay, start_relay

HERE = Path(__file__).parent
BIG = 1024 * 1024


class EventLog:
    """Events reported by a client, each a dict with an ``"event"`` name, to wait on."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.finished = False
        self._waiters: list[tuple[str, Deferred[dict[str, Any]]]] = []

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for waiter in [w for w in self._waiters if w[0] == event.get("event")]:
            self._waiters.remove(waiter)
            waiter[1].callback(event)

    def event(self, name: str) -> Deferred[dict[str, Any]]:
        """
        The first event called ``name``, whether it came already or comes later;
        ``{"event": "missing", ...}`` once the client is gone without it.
        """
        for event in self.events:
            if event.get("event") == name:
                return succeed(event)
        if self.finished:
            return succeed(self._missing(name))
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append((name, waiter))
        return waiter

    def finish(self) -> None:
        """No more events will come: answer every waiter with a "missing" event."""
        self.finished = True
        waiters, self._waiters = self._waiters, []
        for name, waiter in waiters:
            waiter.callback(self._missing(name))

    def _missing(self, name: str) -> dict[str, Any]:
        return {"event": "missing", "wanted": name}


class ClientProcess(EventLog, ProcessProtocol):
    """A spawned client: its JSON events (one a line), its raw output and its end."""

    def __init__(self) -> None:
        super().__init__()
        self.stdout = b""
        self.stderr = b""
        self.ended: Deferred[int | None] = Deferred()
        self._partial = b""

    @property
    def running(self) -> bool:
        return not self.ended.called

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.record(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def _missing(self, name: str) -> dict[str, Any]:
        return {
            "event": "missing",
            "wanted": name,
            "stdout": self.stdout.decode(errors="replace"),
            "stderr": self.stderr.decode(errors="replace"),
        }

    def processEnded(self, reason: Any) -> None:
        self.finish()
        self.ended.callback(getattr(reason.value, "exitCode", None))

    def stop(self) -> Deferred[int | None]:
        """Kill the client if it still runs; fires once it is gone."""
        if self.running:
            try:
                assert self.transport is not None
                self.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass  # processEnded is on its way
        return self.ended


def spawn(testcase, argv: list[str], env: dict[str, str] | None = None) -> ClientProcess:
    """Start ``argv`` in tests/interop; the test's cleanup kills it and waits."""
    process = ClientProcess()
    full_env = dict(os.environ if env is None else env)
    reactor.spawnProcess(process, argv[0], argv, env=full_env, path=str(HERE))
    testcase.addCleanup(process.stop)
    return process


def which(program: str) -> str | None:
    """The program's path, or None when it is not installed."""
    return shutil.which(program)


if TYPE_CHECKING:
    # The test case this mixin is combined with.
    from twisted.trial.unittest import TestCase as _ClientScenariosBase
else:
    _ClientScenariosBase = object


class ClientScenarios(_ClientScenariosBase):
    """
    The checks every client stack passes; mix into a ``TestCase`` and define
    :meth:`client_argv` (and ``skip`` when the stack is absent).
    """

    def client_argv(self, url: str, mode: str) -> list[str]:
        raise NotImplementedError

    @inlineCallbacks
    def start_http_relay(self, **settings: Any):
        """An instance on the http backend, with a FakeBackend behind it."""
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        settings.setdefault("ping_interval", 0)
        settings = {
            k: v.format(backend=url) if isinstance(v, str) else v for k, v in settings.items()
        }
        relay: RunningRelay = start_relay(
            self,
            reactor,
            backend="http",
            messageuri=url + "/message",
            disconnecturi=url + "/disconnect",
            **settings,
        )
        return relay

    def client(self, relay: RunningRelay, mode: str) -> ClientProcess:
        return spawn(self, self.client_argv(relay.ws_url(), mode))

    @inlineCallbacks
    def test_echo_text_binary_and_1mib(self):
        """Text, binary and a 1 MiB binary message come back unchanged through the loopback backend."""
        relay = start_relay(self, reactor, backend="loopback", ping_interval=0)
        client = self.client(relay, "echo")
        echo = yield client.event("echo")
        self.assertEqual(echo.get("text"), "hello \u00fc", echo)
        self.assertEqual(echo["binary"], "0001feff")
        self.assertEqual(
            (echo["big_binary"], echo["big_length"], echo["big_equal"]), (True, BIG, True)
        )
        closed = yield client.event("closed")
        self.assertEqual(closed["code"], 1000)

    @inlineCallbacks
    def test_client_close_code_and_reason_reach_backend(self):
        """A close with 4002 "client bye" from the client is in the backend's disconnect notice."""
        relay = yield self.start_http_relay()
        client = self.client(relay, "close")
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual(
            (notice["meta"]["code"], notice["meta"]["reason"], notice["meta"]["initiator"]),
            (4002, "client bye", "client"),
        )
        self.assertEqual([m["message"] for m in self.backend.messages], ["hi"])
        closed = yield client.event("closed")
        self.assertEqual(closed["code"], 4002)

    @inlineCallbacks
    def test_backend_close_code_and_reason_reach_client(self):
        """A backend disconnect with {"code": 4001, "reason": "bye"} closes the client with both."""
        relay = yield self.start_http_relay()
        client = self.client(relay, "wait")
        (message,) = yield self.backend.wait_for("message", 1)
        code, _ = yield self.backend.post_json(
            message["meta"]["disconnect"], {"code": 4001, "reason": "bye"}
        )
        self.assertEqual(code, 200)
        closed = yield client.event("closed")
        self.assertEqual((closed.get("code"), closed.get("reason")), (4001, "bye"), closed)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (4001, "backend"))

    @inlineCallbacks
    def test_ping_timeout(self):
        """A client that stops answering pings is dropped; the notice has code null, initiator client."""
        relay = yield self.start_http_relay(ping_interval=0.2, ping_timeout=0.2)
        client = self.client(relay, "stall")
        stalled = yield client.event("stalled")
        self.assertEqual(stalled["event"], "stalled", stalled)
        (notice,) = yield self.backend.wait_for("disconnect", 1)
        self.assertEqual((notice["meta"]["code"], notice["meta"]["initiator"]), (None, "client"))
        yield client.stop()

    @inlineCallbacks
    def test_confirmed_send(self):
        """A confirmed send answers 200 once the client's stack has read it, 504 while it is frozen (SIGSTOP)."""
        relay = yield self.start_http_relay()
        client = self.client(relay, "wait")
        (message,) = yield self.backend.wait_for("message", 1)
        code, body = yield self.backend.post_send(message["meta"]["send"] + "?confirm=10", b"yo")
        self.assertEqual((code, body), (200, b"OK"))
        code, body = yield self.backend.post_send(message["meta"]["send"] + "?confirm=10", b"2")
        self.assertEqual((code, body), (200, b"OK"))
        # A phone that froze the app, or a pulled cable: no pong comes.
        process = getattr(client, "process", client)
        assert process.transport is not None
        frozen = pause_tree(process.transport.pid, signal.SIGSTOP)
        try:
            code, _ = yield self.backend.post_send(message["meta"]["send"] + "?confirm=0.5", b"3")
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.assertEqual(code, 504)

    @inlineCallbacks
    def test_confirmed_send_to_a_stalled_client_504_then_killed_410(self):
        """A client that stops reading gets 504; one killed while its confirm waits, 410."""
        relay = yield self.start_http_relay(connecturi="{backend}/connect")
        client = self.client(relay, "stall")
        stalled = yield client.event("stalled")
        self.assertEqual(stalled["event"], "stalled", stalled)
        send = self.backend.connects[-1]["meta"]["send"]
        code, _ = yield self.backend.post_send(send + "?confirm=0.5", b"x")
        self.assertEqual(code, 504)
        pending = self.backend.post_send(send + "?confirm=30", b"y")
        for _ in range(1000):  # the frame is handed over at once; this sees it
            code, _, body = yield self.backend.request("GET", send[: -len("/send")])
            if json.loads(body)["messages_out"] >= 2:
                break
        process = getattr(client, "process", client)
        assert process.transport is not None
        pause_tree(process.transport.pid, signal.SIGKILL)
        code, _ = yield pending
        self.assertEqual(code, 410)


def pause_tree(pid: int, sig: int = signal.SIGSTOP) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants (Linux /proc); returns their pids."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for member in tree:
        try:
            os.kill(member, sig)
        except ProcessLookupError:
            pass
    return tree
