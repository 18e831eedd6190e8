"""
Tests for socketdock.ws.handshake (the real protocol over a StringTransport):
every refusal, the gate's or the backend's, is answered with its status, one
log line and one counted refusal; bytes sent early reach Autobahn only once
the handshake opens.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import Admission, ConnectRefused
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.protocol import RelayServerProtocol
from socketdock.ws.ratelimit import HandshakeRate
from tests.relay.test_admission import AdmittingBackend
from tests.ws.test_flow import frames, masked
from tests.ws.test_lifetime import HANDSHAKE, _Transport
from tests.ws.test_report import RecordingMetrics


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = AdmittingBackend()
        self.registry = Registry()
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        self.relay = Relay(self.backend, self.registry, metrics, self.clock, 8)
        self.metrics: Any = RecordingMetrics()

    def connect(self, **settings: Any) -> tuple[RelayServerProtocol, _Transport]:
        factory = RelayServerFactory(self.relay, 0, 100, self.clock, **settings)
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        protocol = RelayServerProtocol(attrs.evolve(factory.hub, metrics=self.metrics))
        protocol.factory = factory
        transport = _Transport(peerAddress=IPv4Address("TCP", "192.0.2.1", 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_rate_refusal_says_when_to_retry(self) -> None:
        """Past the address's burst: 429 with Retry-After, counted as 'rate', the backend never asked."""
        rate = HandshakeRate(self.clock, 1, 1)
        self.connect(rate=rate)[0].dataReceived(HANDSHAKE)
        protocol, transport = self.connect(rate=rate)
        with capturedLogs() as events:
            protocol.dataReceived(HANDSHAKE)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 too many handshakes"), answer[:60])
        self.assertIn(b"Retry-After: 1\r\n", answer)
        self.assertEqual(self.metrics.refused, [(429, "rate")])
        self.assertEqual(len(self.backend.connects), 1)
        (event,) = [e for e in events if "status" in e]
        self.assertEqual((event["status"], event["peer"]), (429, "tcp4:192.0.2.1:40000"))

    def test_backend_refusal_after_an_id(self) -> None:
        """A backend's no: its status, counted as 'backend', the line names the client, nothing stays live."""
        protocol, transport = self.connect()
        protocol.dataReceived(HANDSHAKE)
        self.assertEqual(len(self.registry), 1)
        with capturedLogs() as events:
            self.backend.connects[0].errback(ConnectRefused(403, "not you"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 not you"))
        self.assertNotIn(b"Retry-After", transport.value())
        self.assertEqual((self.metrics.refused, len(self.registry)), ([(403, "backend")], 0))
        (event,) = [e for e in events if "status" in e]
        self.assertEqual(event["connection_id"], protocol.connection_id)

    def test_early_bytes_wait_for_the_answer(self) -> None:
        """A frame sent before the answer is handled after the upgrade opens, not parsed as HTTP."""
        protocol, transport = self.connect()
        protocol.dataReceived(HANDSHAKE)
        protocol.dataReceived(masked(0x9, b"early"))  # while the backend decides
        self.assertEqual(transport.value(), b"")
        self.backend.connects[0].callback(Admission())
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"101 Switching Protocols", head)
        self.assertEqual(frames(rest), [(0xA, b"early")])

    def test_early_bytes_dropped_when_refused(self) -> None:
        """Refused, the bytes kept aside are dropped unread."""
        protocol, transport = self.connect()
        protocol.dataReceived(HANDSHAKE)
        protocol.dataReceived(masked(0x9, b"early"))
        self.backend.connects[0].errback(ConnectRefused(503, "busy"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 busy"))
        self.assertNotIn(b"early", transport.value())
        self.assertIsNone(protocol._early)
