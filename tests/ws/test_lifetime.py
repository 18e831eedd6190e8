"""
Tests for socketdock.ws.lifetime and the protocol that uses it: ``max_lifetime``
(1001, jittered) and ``tag_deadline`` (1008), on a task.Clock.
"""

from __future__ import annotations

import struct

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import LoopbackBackend
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.lifetime import Lifetime

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class LifetimeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: list[tuple[int, str]] = []
        self.tagged = False

    def lifetime(self, max_lifetime=0.0, tag_deadline=0.0, uniform=0.5) -> Lifetime:
        lifetime = Lifetime(
            self.clock,
            max_lifetime,
            tag_deadline,
            lambda: self.tagged,
            lambda code, reason: self.closed.append((code, reason)),
            lambda: uniform,
        )
        lifetime.start()
        return lifetime

    def test_jitter_bounds(self) -> None:
        """The lifetime is max_lifetime x 0.9 at the lowest draw and x 1.1 at the highest."""
        for uniform, seconds in ((0.0, 90.0), (0.5, 100.0), (0.99999, 110.0)):
            self.clock = Clock()
            self.closed = []
            self.lifetime(max_lifetime=100, uniform=uniform)
            (call,) = self.clock.getDelayedCalls()
            self.assertAlmostEqual(call.getTime(), seconds, places=2)

    def test_expiry_closes_with_1001_saying_why(self) -> None:
        """At the end of its lifetime the connection is closed with 1001 and a reason naming max_lifetime."""
        self.lifetime(max_lifetime=100)
        self.clock.advance(99.9)
        self.assertEqual(self.closed, [])
        self.clock.advance(0.1)
        ((code, reason),) = self.closed
        self.assertEqual(code, 1001)
        self.assertIn("max_lifetime", reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tag_deadline(self) -> None:
        """Untagged at the deadline: 1008; tagged by then: left alone."""
        self.lifetime(tag_deadline=5)
        self.clock.advance(5)
        self.assertEqual([c for c, _ in self.closed], [1008])
        self.closed = []
        self.tagged = True
        self.lifetime(tag_deadline=5)
        self.clock.advance(5)
        self.assertEqual(self.closed, [])

    def test_off_by_default_and_stop_cancels(self) -> None:
        """0 sets nothing; stop() cancels what was set."""
        self.lifetime()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.lifetime(max_lifetime=10, tag_deadline=5).stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RecordingBackend(LoopbackBackend):
    def __init__(self) -> None:
        self.notices: list[tuple] = []

    def disconnect(
        self, connection_id, code, reason, initiator, recovered=False, tags=(), state=None
    ):
        self.notices.append((code, reason, initiator))
        return succeed(None)


class _Transport(StringTransport):
    """Autobahn unregisters a producer it may never have registered."""

    def unregisterProducer(self) -> None:
        self.producer = None


def close_frame(code: int) -> bytes:
    """A masked close frame from the client carrying ``code``."""
    payload = struct.pack("!H", code)
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x88, 0x80 | len(payload)]) + mask + masked


class ProtocolLifetimeTests(SynchronousTestCase):
    """The real protocol over a StringTransport: the close frame, then the backend's notice."""

    def open(self, **limits):
        self.clock = Clock()
        self.backend = RecordingBackend()
        self.registry = Registry()
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        relay = Relay(self.backend, self.registry, metrics, self.clock, 8)
        factory = RelayServerFactory(relay, 0, 1 << 16, self.clock, uniform=lambda: 0.5, **limits)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert protocol is not None
        transport = _Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(HANDSHAKE)
        self.assertIn(b"101 Switching Protocols", transport.value())
        transport.clear()
        return protocol, transport

    def sent_close_code(self, transport: StringTransport) -> int:
        frame = transport.value()
        self.assertEqual(frame[0], 0x88, frame)
        return struct.unpack("!H", frame[2:4])[0]

    def test_max_lifetime_closes_with_1001_and_the_backend_hears(self) -> None:
        """max_lifetime: a 1001 close frame at the drawn time, then the usual notice, initiator server."""
        protocol, transport = self.open(max_lifetime=60)
        self.clock.advance(59.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.sent_close_code(transport), 1001)
        self.assertEqual(len(self.registry), 0, "no longer live once closing")
        protocol.dataReceived(close_frame(1001))
        protocol.connectionLost(Failure(ConnectionDone()))
        ((code, reason, initiator),) = self.backend.notices
        self.assertEqual((code, initiator), (1001, "server"))
        self.assertIn("max_lifetime", reason)

    def test_untagged_connection_closed_with_1008(self) -> None:
        """tag_deadline: a connection no tag reached is closed with 1008."""
        protocol, transport = self.open(tag_deadline=3)
        self.clock.advance(3)
        self.assertEqual(self.sent_close_code(transport), 1008)
        protocol.dataReceived(close_frame(1008))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([n[0] for n in self.backend.notices], [1008])

    def test_a_tag_once_set_counts(self) -> None:
        """A connection tagged (even if untagged since) before the deadline stays open."""
        protocol, transport = self.open(tag_deadline=3)
        self.registry.retag(protocol.connection_id, ("did:a",), ())
        self.registry.retag(protocol.connection_id, (), ("did:a",))
        self.clock.advance(10)
        self.assertEqual(transport.value(), b"")
        self.assertIsInstance(protocol, WebSocketProtocol)
