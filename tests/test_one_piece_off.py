"""
Every faster path can fall back alone: the end-to-end tests again, once for
each piece, with that piece off (as when its start-up check fails after a
library release) and every other piece on.  A further test makes one real
check fail by changing the library beneath it, and follows the verdict to
the start-up line, ``/status`` and ``/metrics``.
"""

from __future__ import annotations

import json

import treq.client as treq_client
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import CookieAgent

from socketdock.tuning import PIECES, Stack, choose_stack
from tests import test_end_to_end
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.harness import start_relay
from tests.wsclient import connect_client


def _one_off(name: str) -> Stack:
    return Stack({p.name: ("off for this test" if p.name == name else "on") for p in PIECES})


def _without(name: str, base: type) -> type:
    def setUp(self) -> None:
        others = [p for p in PIECES if p.name != name]
        for piece in others:
            why = piece.verdict({})
            if why != "on":
                raise SkipTest(f"the {piece.name} piece cannot run here: {why}")

    return type(
        f"{base.__name__}Without_{name}",
        (base,),
        {"stack": _one_off(name), "setUp": setUp, "__module__": __name__},
    )


_END_TO_END = [
    test_end_to_end.LoopbackTests,
    test_end_to_end.MessageTests,
    test_end_to_end.CallbackTests,
    test_end_to_end.ConnectTests,
    test_end_to_end.DisconnectNoticeTests,
    test_end_to_end.InspectionTests,
]

for _piece in PIECES:
    for _base in _END_TO_END:
        _cls = _without(_piece.name, _base)
        globals()[_cls.__name__] = _cls
del _piece, _base, _cls


class _LookalikeCookieAgent(CookieAgent):
    """What a treq release that subclassed Twisted's cookie agent would hold."""


class LibraryChangeTests(TestCase):
    @inlineCallbacks
    def test_a_changed_library_turns_one_piece_off_and_says_so(self):
        """treq no longer names Twisted's CookieAgent: only the cookies piece falls back."""
        before = {p.name: p.verdict({}) for p in PIECES}
        if set(before.values()) != {"on"}:
            raise SkipTest(f"not every piece can run here: {before}")
        self.patch(treq_client, "CookieAgent", _LookalikeCookieAgent)
        backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, port, backend)
        with capturedLogs() as events:
            relay = start_relay(
                self,
                reactor,
                backend="http",
                messageuri=url + "/message",
                ping_interval=0,
                inline_reply=True,
                stack=choose_stack("auto"),
            )
        lines = [e["line"] for e in events if e.get("line", "").startswith("tuning: ")]
        self.assertEqual(len(lines), 1)
        self.assertIn("cookies OFF (treq no longer wraps its agent", lines[0])
        self.assertIn("channel on", lines[0])

        client = yield connect_client(reactor, relay.ws_url())
        self.addCleanup(client.shutdown)
        client.send_text("hello")
        (message,) = yield backend.wait_for("message", 1)
        self.assertEqual(message["message"], "hello")

        base = f"http://127.0.0.1:{relay.port}"
        _, _, body = yield backend.request("GET", base + "/status")
        status = json.loads(body)
        self.assertEqual(
            {name: why == "on" for name, why in status["tuning"].items()},
            {p.name: p.name != "cookies" for p in PIECES},
        )
        _, _, body = yield backend.request("GET", base + "/metrics")
        metrics = body.decode()
        self.assertIn('socketdock_tuned{piece="cookies"} 0.0', metrics)
        self.assertIn('socketdock_tuned{piece="channel"} 1.0', metrics)
