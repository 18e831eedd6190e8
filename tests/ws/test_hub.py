"""
Tests for socketdock.ws.hub: each connection is built with its listener's
hub and reads its collaborators and limits from it, not off its factory.
"""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.metrics import Metrics
from socketdock.relay.budget import ByteBudget
from socketdock.relay.registry import OutboundFull, Registry
from socketdock.relay.session import Relay
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.gate import Gate
from socketdock.ws.protocol import RelayServerProtocol
from tests.ws.test_lifetime import HANDSHAKE, RecordingBackend, _Transport


class HubTests(SynchronousTestCase):
    def setUp(self) -> None:
        registry = Registry()
        metrics = Metrics(active=registry.__len__, queued=lambda: 0)
        self.budget = ByteBudget()
        relay = Relay(RecordingBackend(), registry, metrics, Clock(), 8, budget=self.budget)
        self.factory = RelayServerFactory(relay, 3, 100, Clock(), max_pending=2, ping_interval=5)
        self.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)

    def test_factory_hands_each_connection_its_hub(self) -> None:
        """The factory's settings end up in one frozen hub, and every connection gets that hub."""
        hub = self.factory.hub
        self.assertEqual((hub.max_message_size, hub.ping_interval), (100, 5))
        self.assertIsInstance(hub.gate, Gate)
        self.assertIs(hub.budget, self.budget)
        a, b = self.factory.buildProtocol(None), self.factory.buildProtocol(None)
        self.assertIs(a._hub, hub)
        self.assertIs(b._hub, hub)
        self.assertIs(a.factory, self.factory)
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            hub.max_message_size = 1  # type: ignore[misc]  # frozen: the point of the test

    def test_connection_reads_its_hub_not_the_factory(self) -> None:
        """A connection built with a hub of its own follows that hub's limits (a bound of 2 x 10 here)."""
        protocol = RelayServerProtocol(attrs.evolve(self.factory.hub, max_message_size=10))
        protocol.factory = self.factory  # Autobahn's options
        protocol.makeConnection(_Transport())
        protocol.dataReceived(HANDSHAKE)
        protocol.pauseProducing()
        self.successResultOf(protocol.deliver(b"a" * 20, False))
        self.failureResultOf(protocol.deliver(b"b", False), OutboundFull)
