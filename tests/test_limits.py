"""
The limits of SPEC §2 and §4 end to end: max_connections, allowed_origins and
inline_reply, on a real instance and backend over loopback.  (queue_limit is
in test_reliability's backpressure tests.)
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakebackend import STALL, Answer
from tests.test_end_to_end import RelayTestCase
from tests.wsclient import HandshakeRefused, connect_client


class LimitCase(RelayTestCase):
    timeout = 30

    def refused(self, **kwargs):
        """Fires with the status of a handshake that must be refused."""
        d = self.assertFailure(
            connect_client(reactor, self.relay.ws_url(), **kwargs), HandshakeRefused
        )
        return d.addCallback(lambda failure: failure.status)  # type: ignore[call-overload]  # assertFailure fires with the exception, not the client its type says


class MaxConnectionsTests(LimitCase):
    @inlineCallbacks
    def test_past_max_connections_is_503(self):
        """With max_connections 2 a third handshake gets 503; once one leaves a new one is admitted."""
        yield self.start(max_connections=2)
        first = yield self.client()
        yield self.client()
        self.assertEqual((yield self.refused()), 503)
        yield first.close()
        yield self.backend.wait_for("disconnect", 1)
        yield self.client()

    @inlineCallbacks
    def test_pending_handshake_counts(self):
        """A handshake still waiting for the backend's connect answer takes a place."""
        yield self.start(max_connections=1, connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, self.relay.ws_url())
        yield self.backend.wait_for("connect", 1)
        self.assertEqual((yield self.refused()), 503)
        self.assertEqual(len(self.backend.connects), 1)
        self.backend.release(self.backend.stalled[0], Answer(200, b""))
        client = yield pending
        self.addCleanup(client.shutdown)


class OriginTests(LimitCase):
    @inlineCallbacks
    def test_foreign_origin_is_403(self):
        """An Origin matching no pattern is refused with 403 before the backend hears of it."""
        yield self.start(allowed_origins="https://*.example.com", connecturi="{backend}/connect")
        self.assertEqual((yield self.refused(origin="https://evil.test")), 403)
        self.assertEqual((yield self.refused(origin="https://example.com.evil.test")), 403)
        self.assertEqual((yield self.refused(origin="http://app.example.com")), 403)
        self.assertEqual(self.backend.connects, [])

    @inlineCallbacks
    def test_matching_pattern_is_101(self):
        """``https://*.example.com`` admits https://app.example.com, on its default port or not."""
        yield self.start(allowed_origins="https://*.example.com, http://localhost:*")
        for origin in (
            "https://app.example.com",
            "https://app.example.com:443",
            "http://localhost:3000",
        ):
            client = yield self.client(origin=origin)
            yield client.close()

    @inlineCallbacks
    def test_no_origin_header_is_admitted(self):
        """A non-browser client that sends no Origin is admitted whatever the patterns."""
        yield self.start(allowed_origins="https://*.example.com")
        client = yield self.client()
        yield client.ping()


class InlineReplyTests(LimitCase):
    @inlineCallbacks
    def test_2xx_body_goes_to_the_client(self):
        """With inline_reply a text/* body arrives as a text frame, another type as binary."""
        yield self.start(inline_reply=True)
        self.backend.answer_next(
            "message",
            Answer(200, "réponse".encode(), {"Content-Type": "text/plain; charset=utf-8"}),
            Answer(202, b"\x00\x01", {"Content-Type": "application/octet-stream"}),
            Answer(200, b""),
        )
        client = yield self.client()
        client.send_text("a")
        client.send_text("b")
        client.send_text("c")
        self.assertEqual((yield client.next_message()), ("réponse".encode(), False))
        self.assertEqual((yield client.next_message()), (b"\x00\x01", True))
        yield self.backend.wait_for("message", 3)
        yield client.ping()
        code, _ = yield self.backend.post_send(self.backend.messages[0]["meta"]["send"], b"next")
        self.assertEqual(code, 200)
        self.assertEqual((yield client.next_message()), (b"next", False))

    @inlineCallbacks
    def test_off_by_default(self):
        """Without inline_reply the backend's "OK" is not sent to the client."""
        yield self.start()
        client = yield self.client()
        client.send_text("a")
        (msg,) = yield self.backend.wait_for("message", 1)
        yield self.backend.post_send(msg["meta"]["send"], b"only this")
        self.assertEqual((yield client.next_message()), (b"only this", False))


class HandshakeRateTests(LimitCase):
    @inlineCallbacks
    def test_past_the_burst_is_429_before_the_backend(self):
        """handshake_rate 0.5, burst 2: the third handshake from 127.0.0.1 is 429 + Retry-After, unseen by the backend, and counted."""
        from tests.ws.test_hardening import raw_exchange, status_line, upgrade_request

        yield self.start(handshake_rate=0.5, handshake_burst=2, connecturi="{backend}/connect")
        yield self.client()
        yield self.client()
        answer = yield raw_exchange(self.relay.port, upgrade_request()).answered
        self.assertEqual(status_line(answer), b"HTTP/1.1 429 too many handshakes from this address")
        self.assertIn(b"\r\nRetry-After: 2\r\n", answer)
        self.assertEqual(len(self.backend.connects), 2)
        _code, _, body = yield self.backend.request("GET", self.relay.base + "/metrics")
        self.assertIn(b'socketdock_handshakes_refused_total{reason="rate",status="429"} 1.0', body)

    @inlineCallbacks
    def test_off_by_default(self):
        """Without handshake_rate, 30 handshakes in a row from one address are all admitted."""
        yield self.start(connecturi="{backend}/connect")
        for _ in range(30):
            client = yield self.client()
            yield client.close()
        self.assertEqual(len(self.backend.connects), 30)


class PendingHandshakesTests(LimitCase):
    @inlineCallbacks
    def test_past_pending_handshakes_is_503(self):
        """pending_handshakes 1: while one connect notice waits, the next handshake is 503 unseen by the backend; once answered, admitted."""
        yield self.start(pending_handshakes=1, connecturi="{backend}/connect")
        self.backend.answer_next("connect", STALL)
        pending = connect_client(reactor, self.relay.ws_url())
        yield self.backend.wait_for("connect", 1)
        self.assertEqual((yield self.refused()), 503)
        self.assertEqual(len(self.backend.connects), 1)
        self.backend.release(self.backend.stalled[0], Answer(200, b""))
        client = yield pending
        self.addCleanup(client.shutdown)
        yield self.client()
        _code, _, body = yield self.backend.request("GET", self.relay.base + "/metrics")
        self.assertIn(
            b'socketdock_handshakes_refused_total{reason="pending",status="503"} 1.0', body
        )

    @inlineCallbacks
    def test_refused_admissions_leave_no_count(self):
        """Refused and failed admissions free their place: pending_handshakes 1 still admits after three refusals."""
        yield self.start(pending_handshakes=1, connecturi="{backend}/connect")
        for _ in range(3):
            self.backend.answer_next("connect", Answer(403, b"no"))
            self.assertEqual((yield self.refused()), 403)
        yield self.client()


class DescriptorBudgetTests(LimitCase):
    """
    The public listener holds at most what the open-file limit leaves room
    for, so that the callback API and /healthz keep answering.
    """

    #: An open-file limit that leaves 20 public connections (see connection_budget).
    OPEN_FILES = 64 + 128 + 20

    @inlineCallbacks
    def admitted_once_room(self):
        """A client, once the instance has noticed a close (each try a round trip)."""
        for _ in range(200):
            try:
                client = yield connect_client(reactor, self.relay.ws_url())
            except HandshakeRefused as e:
                self.assertEqual(e.status, 503)
                continue
            self.addCleanup(client.shutdown)
            return client
        self.fail("no room after a close")

    @inlineCallbacks
    def test_full_listener_keeps_the_api_answering(self):
        """20 places: 10 idle sockets + 10 clients fill them; the next gets 503, the API and its /healthz answer; a close frees a place."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from tests.ws.test_hardening import raw_exchange, status_line

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield self.start(api_listen="tcp:0:interface=127.0.0.1", open_files=self.OPEN_FILES)
        derived = [e for e in events if "(derived" in e.get("log_format", "")]
        self.assertEqual([e["budget"] for e in derived], [20])
        idle = [raw_exchange(self.relay.port, b"") for _ in range(10)]
        clients = []
        for _ in range(10):
            clients.append((yield self.client()))
        answer = yield raw_exchange(self.relay.port, b"").answered
        self.assertEqual(status_line(answer), b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual((yield self.refused()), 503)
        code, _, _ = yield self.backend.request("GET", self.relay.base + "/healthz")
        self.assertEqual(code, 200)
        code, _, _ = yield self.backend.request("GET", self.relay.base + "/status")
        self.assertEqual(code, 200)
        _, _, body = yield self.backend.request("GET", self.relay.base + "/metrics")
        self.assertIn(b"\nsocketdock_listener_refused_total 2.0\n", body)
        full = [e for e in events if "refusing new ones" in e.get("log_format", "")]
        self.assertEqual(len(full), 1)
        # A WebSocket client's place, and an idle socket's, come back when they close.
        yield clients.pop().close()
        clients.append((yield self.admitted_once_room()))
        idle.pop().transport.loseConnection()
        clients.append((yield self.admitted_once_room()))
        for protocol in idle:
            protocol.transport.loseConnection()

    @inlineCallbacks
    def test_given_max_connections_is_kept(self):
        """max_connections set: it stays, and no line says it was derived."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        yield self.start(max_connections=3, open_files=self.OPEN_FILES)
        self.assertEqual([e for e in events if "(derived" in e.get("log_format", "")], [])
        for _ in range(3):
            yield self.client()
        self.assertEqual((yield self.refused()), 503)
