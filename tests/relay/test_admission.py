"""
Unit tests for socketdock.relay.admission: one connection's life from the
connect notice to the disconnect notice, with no WebSocket in sight.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.ops.metrics import Metrics
from socketdock.relay.admission import CLOSED, OPEN, Admissions, Refused
from socketdock.relay.backend import Admission, ConnectRefused, IBackend
from socketdock.relay.registry import NotLive, Registry
from socketdock.relay.session import Relay
from tests.relay.test_relay import FakeSocket, ScriptedBackend


@implementer(IBackend)
class AdmittingBackend(ScriptedBackend):
    """Each connect notice waits for the test's answer."""

    admits = True

    def __init__(self) -> None:
        super().__init__()
        self.connects: list[Deferred] = []

    def connect(self, connection_id, headers, offered, context=None):
        d: Deferred = Deferred()
        self.connects.append(d)
        return d


class EntryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.backend = AdmittingBackend()
        self.registry = Registry()
        self.relay = Relay(
            self.backend,
            self.registry,
            Metrics(active=self.registry.__len__, queued=lambda: 0),
            Clock(),
            queue_limit=3,
        )
        self.admissions = Admissions(self.relay, max_connections=2)
        self.socket = FakeSocket("")
        self.entry = self.admissions.enter(self.socket)
        self.answer = self.entry.connect({}, [], {})

    def test_registered_with_an_id_from_the_start(self) -> None:
        """The socket gets its id and is live while the backend decides."""
        self.assertEqual(len(self.socket.connection_id), 32)
        self.assertIs(self.registry.get(self.socket.connection_id), self.socket)

    def test_admitted_with_tags_state_and_subprotocol(self) -> None:
        """The answer's tags and state reach the socket; the subprotocol is the result."""
        self.backend.connects[0].callback(Admission("chat", ("room",), '{"a":1}'))
        self.assertEqual(self.successResultOf(self.answer), "chat")
        self.assertEqual((self.socket.tags, self.socket.backend_state), (("room",), '{"a":1}'))
        self.assertIsNotNone(self.entry.session)

    def test_held_sends_go_out_in_order_on_open(self) -> None:
        """Sends made while pending wait, then go out in order once it opens."""
        first, second = self.entry.hold(b"1", False), self.entry.hold(b"2", True)
        self.backend.connects[0].callback(Admission())
        sent: list = []

        def send_now(payload: bytes, is_binary: bool, d: Deferred) -> None:
            sent.append(payload)
            d.callback(None)

        self.entry.opened(send_now)
        self.assertEqual(sent, [b"1", b"2"])
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.entry.state, OPEN)

    def test_refused_fails_held_sends(self) -> None:
        """A refusal carries the backend's status, and the held sends fail as not live."""
        held = self.entry.hold(b"1", False)
        self.backend.connects[0].errback(ConnectRefused(403, "no"))
        refused = self.failureResultOf(self.answer, Refused).value
        self.assertEqual((refused.status, refused.why, refused.label), (403, "no", "backend"))
        self.failureResultOf(held, NotLive)
        self.assertIsNone(self.registry.get(self.socket.connection_id))

    def test_client_left_while_the_backend_decided(self) -> None:
        """A backend that admits a client already gone hears it left."""
        self.assertIsNone(self.entry.ended(None))
        self.backend.connects[0].callback(Admission(tags=("t",)))
        self.failureResultOf(self.answer, Refused)
        self.assertEqual(
            self.backend.notices,
            [(self.socket.connection_id, None, "client left during the handshake", "client")],
        )
        self.assertEqual(self.entry.state, CLOSED)

    def test_closed_open_connection_notifies(self) -> None:
        """Closed by the server once open: a close frame is due, and the notice carries it."""
        self.backend.connects[0].callback(Admission())
        self.entry.opened(lambda *_: None)
        self.assertTrue(self.entry.close(1000, "bye", "server"))
        self.assertFalse(self.entry.close(1001, "again", "server"))
        self.assertEqual(self.entry.ended(None), (1000, "server"))
        self.assertEqual(self.backend.notices, [(self.socket.connection_id, 1000, "bye", "server")])

    def test_door_closed_when_full_or_draining(self) -> None:
        """Past max_connections, or while draining, no handshake starts."""
        self.assertIsNone(self.admissions.closed())
        self.admissions.enter(FakeSocket(""))
        self.assertEqual(self.admissions.closed().label, "capacity")  # type: ignore[union-attr]
        self.relay.draining = True
        self.assertEqual(self.admissions.closed().label, "draining")  # type: ignore[union-attr]
