"""
The WebSocket protocol is what both the callback API and a Session drive;
its mixins' hooks do not overlap.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass

from socketdock.relay.registry import IConnection
from socketdock.relay.session import ISocket
from socketdock.ws.flow import FlowControl
from socketdock.ws.fragments import FragmentLimit
from socketdock.ws.handshake import OpeningHandshake
from socketdock.ws.protocol import RelayServerProtocol


class InterfaceTests(SynchronousTestCase):
    def test_socket_is_a_connection(self) -> None:
        """ISocket adds flow control to IConnection rather than repeating its methods."""
        self.assertTrue(ISocket.extends(IConnection))
        self.assertEqual(set(ISocket.names()), {"pause_reading", "resume_reading"})

    def test_protocol_provides_both(self) -> None:
        self.assertTrue(verifyClass(ISocket, RelayServerProtocol))
        self.assertTrue(verifyClass(IConnection, RelayServerProtocol))


class HookOwnershipTests(SynchronousTestCase):
    def test_no_two_classes_define_the_same_hook(self) -> None:
        """The protocol and its mixins override disjoint methods: the mixins call Autobahn's directly and skip none."""
        classes = [RelayServerProtocol, OpeningHandshake, FlowControl, FragmentLimit]
        seen: dict[str, str] = {}
        for cls in classes:
            for name, value in vars(cls).items():
                if name.startswith("__") or not callable(value):
                    continue
                self.assertNotIn(
                    name, seen, f"{cls.__name__} and {seen.get(name)} both define {name}"
                )
                seen[name] = cls.__name__
