"""
Headless Chromium against a real SocketDock over loopback.

The page (tests/interop/page.html) is served by twisted.web on loopback; its
script connects, runs one scenario and writes each event into the DOM, which
the test reads back through ``--dump-dom``. The page also POSTs its events to
the page server so that the test can act while it runs. A browser cannot stop
answering pings from a script, so the ping-timeout check stops (SIGSTOP) the
whole browser, as a phone does to a backgrounded tab.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File

from tests.harness import start_relay
from tests.interop.support import HERE, ClientProcess, ClientScenarios, EventLog, pause_tree, which

_CHROMIUM = which("chromium") or which("chromium-browser")


class _Event(Resource):
    isLeaf = True

    def __init__(self, log: EventLog) -> None:
        super().__init__()
        self._log = log

    def render_POST(self, request) -> bytes:
        event = json.loads(request.content.read())
        self._log.record(event)
        return b"ok"


class _Hold(Resource):
    """Answers nothing until released: the page has not loaded, so --dump-dom waits."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.released = False
        self._waiting: list = []

    def render_GET(self, request):
        if self.released:
            return b"released"
        self._waiting.append(request)
        request.notifyFinish().addErrback(lambda _: self._waiting.remove(request))
        return NOT_DONE_YET

    def release(self) -> None:
        self.released = True
        waiting, self._waiting = self._waiting, []
        for request in waiting:
            request.write(b"released")
            request.finish()


class _QuietSite(Site):
    """A Site without access logs."""

    noisy = False

    def log(self, request) -> None:
        pass


class _Tracking(WrappingFactory):
    """Keeps the page server's connections, to close and await them in cleanup."""

    noisy = False

    def __init__(self, wrapped) -> None:
        super().__init__(wrapped)
        self.gone: dict[Any, Deferred] = {}

    def registerProtocol(self, p) -> None:
        super().registerProtocol(p)
        self.gone[p] = Deferred()

    def unregisterProtocol(self, p) -> None:
        super().unregisterProtocol(p)
        self.gone.pop(p).callback(None)


class ChromiumClient(EventLog):
    """One headless Chromium on one page server; its events and dumped DOM."""

    def __init__(self, testcase, ws_url: str, mode: str) -> None:
        super().__init__()
        self._mode = mode
        self._hold = _Hold()
        root = Resource()
        root.putChild(b"page.html", File(str(HERE / "page.html")))
        root.putChild(b"event", _Event(self))
        root.putChild(b"hold", self._hold)
        self._factory = _Tracking(_QuietSite(root))
        self._port = reactor.listenTCP(0, self._factory, interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted's Site/ServerFactory generics disagree
        port = self._port.getHost().port  # type: ignore[attr-defined]  # a TCP port's host is an IPv4Address
        page = "http://127.0.0.1:{}/page.html?{}".format(
            port, urlencode({"ws": ws_url, "mode": mode})
        )
        self.process = ClientProcess()
        argv = [
            _CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--user-data-dir=" + os.path.abspath(testcase.mktemp()),
            "--dump-dom",
            page,
        ]
        reactor.spawnProcess(self.process, argv[0], argv, env=dict(os.environ))
        self.process.ended.addBoth(lambda _: self.finish())
        self._stopped = False
        testcase.addCleanup(self.stop)

    def record(self, event: dict[str, Any]) -> None:
        super().record(event)
        if self._mode == "stall" and event.get("event") == "sent":
            assert self.process.transport is not None
            pause_tree(self.process.transport.pid, signal.SIGSTOP)
            self._stopped = True
            super().record({"event": "stalled"})

    def stop(self) -> Deferred:
        """Let the browser run again, release the page and wait for it to exit."""
        transport = self.process.transport
        # (A killed browser may have no pid left before processEnded says so.)
        if self._stopped and transport is not None and transport.pid is not None:
            pause_tree(transport.pid, signal.SIGCONT)
        self._stopped = False
        self._hold.release()
        return self.process.ended.addCallback(lambda _: self._close_server())

    def _close_server(self) -> Deferred:
        waits = list(self._factory.gone.values())
        for conn in list(self._factory.protocols):
            conn.transport.abortConnection()
        waits.append(maybeDeferred(self._port.stopListening))
        return DeferredList(waits, consumeErrors=True)

    def dom_events(self) -> list[dict[str, Any]]:
        """The events the page wrote into #log, from the dumped DOM."""
        found = re.search(rb'<pre id="log">(.*?)</pre>', self.process.stdout, re.S)
        if found is None:
            return []
        text = html.unescape(found.group(1).decode("utf-8"))
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class ChromiumTests(ClientScenarios, TestCase):
    """The shared client checks, with headless Chromium; results also read from the DOM."""

    if _CHROMIUM is None:
        skip = "chromium is not installed (Debian package chromium)"

    def client(self, relay, mode):
        return ChromiumClient(self, relay.ws_url(), mode)

    @inlineCallbacks
    def test_dom_holds_the_echo_results(self):
        """The page's DOM, dumped by Chromium, records the echoed text, binary and 1 MiB message."""
        relay = start_relay(self, reactor, backend="loopback", ping_interval=0)
        client = self.client(relay, "echo")
        yield client.event("closed")
        yield client.stop()
        events = {e["event"]: e for e in client.dom_events()}
        self.assertEqual(events["echo"]["text"], "hello \u00fc", client.process.stdout[-2000:])
        self.assertEqual(events["echo"]["binary"], "0001feff")
        self.assertEqual(
            (events["echo"]["big_length"], events["echo"]["big_equal"]), (1024 * 1024, True)
        )
        self.assertEqual(events["closed"]["code"], 1000)
