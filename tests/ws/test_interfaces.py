"""The WebSocket protocol is what both the callback API and a Session drive."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass

from socketdock.relay.registry import IConnection
from socketdock.relay.session import ISocket
from socketdock.ws.protocol import RelayServerProtocol


class InterfaceTests(SynchronousTestCase):
    def test_socket_is_a_connection(self) -> None:
        """ISocket adds flow control to IConnection rather than repeating its methods."""
        self.assertTrue(ISocket.extends(IConnection))
        self.assertEqual(set(ISocket.names()), {"pause_reading", "resume_reading"})

    def test_protocol_provides_both(self) -> None:
        self.assertTrue(verifyClass(ISocket, RelayServerProtocol))
        self.assertTrue(verifyClass(IConnection, RelayServerProtocol))
