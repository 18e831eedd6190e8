"""The WebSocket factory's protocol options, as connections see them."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.autobahn_tuning import with_options
from socketdock.websocket import RelayServerFactory, RelayServerProtocol


class OptionsAsClassAttributesTests(SynchronousTestCase):
    def test_connections_share_the_factorys_options(self) -> None:
        """A connection reads the factory's options without a copy of its own."""
        factory = RelayServerFactory(None, 0, 10, Clock())
        factory.setProtocolOptions(maxMessagePayloadSize=10, echoCloseCodeReason=True)
        protocol = factory.protocol()
        self.assertEqual((protocol.maxMessagePayloadSize, protocol.echoCloseCodeReason), (10, True))
        self.assertNotIn("maxMessagePayloadSize", vars(protocol))
        self.assertTrue(issubclass(factory.protocol, RelayServerProtocol))

    def test_function_options_stay_plain_functions(self) -> None:
        """A function option (the deflate acceptor) is called with its own arguments, not the protocol."""
        seen = []
        factory = RelayServerFactory(None, 0, 10, Clock())
        factory.setProtocolOptions(perMessageCompressionAccept=lambda offers: seen.append(offers))
        factory.protocol().perMessageCompressionAccept(["offer"])
        self.assertEqual(seen, [["offer"]])

    def test_factories_do_not_share_options(self) -> None:
        """Two factories' options do not leak into each other's connections."""
        a, b = RelayServerFactory(None, 0, 10, Clock()), RelayServerFactory(None, 0, 10, Clock())
        a.setProtocolOptions(maxMessagePayloadSize=1)
        b.setProtocolOptions(maxMessagePayloadSize=2)
        self.assertEqual((a.protocol.maxMessagePayloadSize, b.protocol.maxMessagePayloadSize), (1, 2))
        self.assertIsNot(with_options(RelayServerProtocol, a), a.protocol)
