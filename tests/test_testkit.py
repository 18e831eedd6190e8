"""
Tests for the end-to-end test kit itself (wsclient, fakebackend) over real loopback
sockets, against a throwaway Autobahn echo server and the FakeBackend.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ResponseNeverReceived

from tests.fakebackend import RESET, STALL, Answer, FakeBackend, start_backend, stop_backend
from tests.wsclient import ClientClosed, HandshakeRefused, _complete_body, connect_client


class _Echo(WebSocketServerProtocol):
    """Echoes frames; ``close:<code>:<reason>`` makes it close; ``/deny`` is refused."""

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if request.path == "/deny":
            raise ConnectionDeny(403, "Forbidden")
        return "chat" if "chat" in request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary and payload.startswith(b"close:"):
            _, code, reason = payload.decode("utf-8").split(":", 2)
            self.sendClose(int(code), reason)
        else:
            self.sendMessage(payload, isBinary)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.live += 1

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn calls onClose from connectionLost, refused handshakes included.
        self.factory.gone((wasClean, self.remoteCloseCode, self.remoteCloseReason))


class _EchoFactory(WebSocketServerFactory):
    """Counts live server-side connections so cleanup can wait for them all to end."""

    protocol = _Echo
    noisy = False

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        self.setProtocolOptions(autoPingInterval=0)
        self.live = 0
        self.closes: list[tuple[bool, int | None, str | None]] = []
        self._idle: list[Deferred[None]] = []

    def gone(self, info: tuple[bool, int | None, str | None]) -> None:
        self.live -= 1
        self.closes.append(info)
        if self.live == 0:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def all_gone(self) -> Deferred[None]:
        if self.live == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d


class WebSocketClientTests(TestCase):
    """The test client against a real Autobahn echo server on loopback."""

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]  # trial waits on a Deferred from setUp
        from twisted.internet import reactor

        self.reactor = reactor
        self.server = _EchoFactory(reactor)
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        port = yield endpoint.listen(self.server)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.server.all_gone)
        self.base = f"ws://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def connect(self, path: str = "/ws", **kwargs: Any) -> Any:
        client = yield connect_client(self.reactor, self.base + path, **kwargs)
        self.addCleanup(client.shutdown)
        return client

    @inlineCallbacks
    def test_text_and_binary_round_trip(self) -> Any:
        """Text and binary messages come back with their frame type."""
        client = yield self.connect()
        client.send_text("héllo")
        self.assertEqual((yield client.next_message()), ("héllo".encode(), False))
        client.send_binary(b"\xff\x00")
        self.assertEqual((yield client.next_message()), (b"\xff\x00", True))

    @inlineCallbacks
    def test_messages_queue_until_read(self) -> Any:
        """Messages that arrive while nobody waits are kept in order."""
        client = yield self.connect()
        for text in ("one", "two", "three"):
            client.send_text(text)
        yield client.ping()
        yield client.ping()  # the echoes were sent before the second pong
        got = []
        for _ in range(3):
            got.append((yield client.next_message())[0])
        self.assertEqual(got, [b"one", b"two", b"three"])

    @inlineCallbacks
    def test_client_close_code_reaches_server(self) -> Any:
        """A client close code reaches the server; closed reports the server's reply."""
        client = yield self.connect()
        info = yield client.close(4001, "bye")
        # Autobahn servers answer a close with 1000 unless echoCloseCodeReason is on.
        self.assertEqual(info, (True, 1000, None))
        yield self.server.all_gone()
        self.assertEqual(self.server.closes, [(True, 4001, "bye")])

    @inlineCallbacks
    def test_reserved_close_code_is_sent_raw(self) -> Any:
        """Codes Autobahn's sendClose refuses, like 1001, still go out."""
        client = yield self.connect()
        yield client.close(1001, "away")
        yield self.server.all_gone()
        self.assertEqual(self.server.closes, [(True, 1001, "away")])

    @inlineCallbacks
    def test_server_close_code_is_reported(self) -> Any:
        """The close code the server sent is what closed fires with."""
        client = yield self.connect()
        client.send_text("close:4003:go away")
        self.assertEqual((yield client.closed), (True, 4003, "go away"))

    @inlineCallbacks
    def test_waiting_reader_fails_on_close(self) -> Any:
        """A pending next_message fails with ClientClosed when the socket ends."""
        client = yield self.connect()
        pending = client.next_message()
        client.send_text("close:4000:done")
        failure = yield self.assertFailure(pending, ClientClosed)
        self.assertEqual(failure.code, 4000)

    @inlineCallbacks
    def test_abort_has_no_close_code(self) -> Any:
        """An abort ends the socket uncleanly with no close code on either side."""
        client = yield self.connect()
        info = yield client.abort()
        self.assertEqual(info, (False, None, None))
        yield self.server.all_gone()
        self.assertEqual(self.server.closes[0][:2], (False, None))

    @inlineCallbacks
    def test_refused_handshake_carries_status(self) -> Any:
        """A server refusing the upgrade yields HandshakeRefused with its 403."""
        refused = yield self.assertFailure(self.connect("/deny"), HandshakeRefused)
        self.assertEqual(refused.status, 403)

    @inlineCallbacks
    def test_subprotocol_is_reported(self) -> Any:
        """The subprotocol the server picked is exposed as selected_protocol."""
        client = yield self.connect(protocols=["chat"])
        self.assertEqual(client.selected_protocol, "chat")
        plain = yield self.connect()
        self.assertIsNone(plain.selected_protocol)


class FakeBackendTests(TestCase):
    """The FakeBackend over real loopback HTTP, driven by its own treq helpers."""

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]  # trial waits on a Deferred from setUp
        from twisted.internet import reactor

        self.backend = FakeBackend(reactor)
        self.port, self.base = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, self.port, self.backend)

    @inlineCallbacks
    def test_records_json_and_headers(self) -> Any:
        """Each POST is recorded raw and decoded, in order, per path."""
        message = {"meta": {"connection_id": "ab" * 16, "seq": 1}, "message": "hi"}
        reply = yield self.backend.post_json(self.base + "/message", message)
        self.assertEqual(reply, (200, b"OK"))
        yield self.backend.post_json(self.base + "/disconnect", {"connection_id": "x"})
        self.assertEqual(self.backend.messages, [message])
        self.assertEqual(self.backend.disconnects, [{"connection_id": "x"}])
        first = self.backend.received[0]
        self.assertEqual(first.path, "/message")
        self.assertEqual(first.json, message)
        self.assertEqual(first.headers.getRawHeaders(b"content-type"), [b"application/json"])

    @inlineCallbacks
    def test_scripted_answers(self) -> Any:
        """One-shot answers are used in order, then the default answer."""
        self.backend.answer("connect", 204, b"", {b"X-Default": b"1"})
        self.backend.answer_next(
            "/connect", Answer(503, b"busy", {b"Retry-After": b"1"}), Answer(403, b"no")
        )
        codes = []
        for _ in range(3):
            code, headers, body = yield self.backend.request("POST", self.base + "/connect", b"{}")
            codes.append((code, body))
        self.assertEqual(codes, [(503, b"busy"), (403, b"no"), (204, b"")])
        self.assertEqual(headers.getRawHeaders(b"x-default"), [b"1"])

    @inlineCallbacks
    def test_stall_and_release(self) -> Any:
        """A stalled request stays open until the test releases it."""
        self.backend.answer_next("message", STALL)
        reply = self.backend.post_send(self.base + "/message", b"{}")
        yield self.backend.wait_for("message", 1)
        self.assertNoResult(reply)
        self.assertEqual(len(self.backend.stalled), 1)
        self.assertTrue(self.backend.release(self.backend.stalled[0], Answer(202, b"late")))
        self.assertEqual((yield reply), (202, b"late"))
        self.assertEqual(self.backend.stalled, [])

    @inlineCallbacks
    def test_unreleased_stall_is_cleaned_up(self) -> Any:
        """stop_backend aborts a still-stalled request so the reactor stays clean."""
        self.backend.answer_next("message", STALL)
        reply = self.backend.post_send(self.base + "/message", b"{}")
        yield self.backend.wait_for("message", 1)
        yield stop_backend(self.port, self.backend)
        yield self.assertFailure(reply, ResponseNeverReceived)
        self.assertEqual(self.backend.stalled, [])

    @inlineCallbacks
    def test_reset_drops_connection(self) -> Any:
        """RESET aborts the TCP connection without an HTTP answer."""
        self.backend.answer_next("disconnect", RESET)
        yield self.assertFailure(
            self.backend.post_json(self.base + "/disconnect", {}), ResponseNeverReceived
        )
        self.assertEqual(self.backend.disconnects, [{}])
        self.assertEqual((yield self.backend.post_json(self.base + "/disconnect", {}))[0], 200)

    @inlineCallbacks
    def test_wait_for(self) -> Any:
        """wait_for fires once enough requests arrived, at once if they already have."""
        waiting = self.backend.wait_for("message", 2)
        yield self.backend.post_json(self.base + "/message", {"n": 1})
        self.assertNoResult(waiting)
        yield self.backend.post_json(self.base + "/message", {"n": 2})
        self.assertEqual(self.successResultOf(waiting), [{"n": 1}, {"n": 2}])
        again = yield self.backend.wait_for("/message", 1)
        self.assertEqual(len(again), 2)

    @inlineCallbacks
    def test_only_post(self) -> Any:
        """Other methods get 405 and are not recorded."""
        code, _, _ = yield self.backend.request("GET", self.base + "/message")
        self.assertEqual(code, 405)
        self.assertEqual(self.backend.received, [])

    @inlineCallbacks
    def test_refusal_body_is_captured(self) -> Any:
        """A twisted.web refusal (405 with a body) reaches HandshakeRefused whole."""
        from twisted.internet import reactor

        url = self.base.replace("http:", "ws:") + "/message"
        refused = yield self.assertFailure(connect_client(reactor, url), HandshakeRefused)
        self.assertEqual(refused.status, 405)
        self.assertIn(b"Method Not Allowed", refused.body)


class CompleteBodyTests(SynchronousTestCase):
    """How a refusal's body is known to be complete."""

    def test_chunked(self) -> None:
        """A chunked body is complete at the zero chunk and comes back de-chunked."""
        headers = {"transfer-encoding": "chunked"}
        self.assertIsNone(_complete_body(headers, b"3\r\nabc\r\n"))
        self.assertEqual(_complete_body(headers, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde")

    def test_content_length(self) -> None:
        """A Content-Length body is complete once that many bytes arrived."""
        self.assertIsNone(_complete_body({"content-length": "4"}, b"abc"))
        self.assertEqual(_complete_body({"content-length": "4"}, b"abcd"), b"abcd")

    def test_until_close(self) -> None:
        """Without either header the body only ends with the connection."""
        self.assertIsNone(_complete_body({}, b"anything"))
