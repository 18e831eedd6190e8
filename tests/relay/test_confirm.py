"""How a confirmed send turns into outcomes (socketdock.relay.confirm), with fakes."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.confirm import (
    Gone,
    Tally,
    Unconfirmed,
    confirm_all,
    confirm_timeout,
    deliver_confirmed,
)
from socketdock.relay.registry import NotLive, OutboundFull


class FakeConnection:
    """Delivers as told; its confirm is a Deferred the test fires."""

    def __init__(self, delivered=None):
        self.delivered = succeed(None) if delivered is None else delivered
        self.confirmed: Deferred = Deferred()
        self.cancelled = False

    def deliver(self, payload, is_binary):
        return self.delivered

    def confirm(self, timeout):
        self.confirmed = Deferred(lambda _: setattr(self, "cancelled", True))
        return self.confirmed


class DeliverConfirmedTests(SynchronousTestCase):
    def test_confirmed(self):
        """Delivered and confirmed: fires with None."""
        c = FakeConnection()
        d = deliver_confirmed(c, b"x", False, 5)
        self.assertNoResult(d)
        c.confirmed.callback(None)
        self.assertIsNone(self.successResultOf(d))

    def test_not_sent_stops_waiting(self):
        """A frame not taken (client not reading) fails at once and cancels the wait."""
        c = FakeConnection(fail(OutboundFull()))
        self.failureResultOf(deliver_confirmed(c, b"x", False, 5), OutboundFull)
        self.assertTrue(c.cancelled)

    def test_held_then_refused_is_not_live(self):
        """A frame held for a handshake that is refused fails NotLive, not Gone."""
        held: Deferred = Deferred()
        c = FakeConnection(held)
        d = deliver_confirmed(c, b"x", False, 5)
        c.confirmed.errback(Gone())
        held.errback(NotLive())
        self.failureResultOf(d, NotLive)

    def test_tally(self):
        """confirm_all counts each outcome; NotLive counts as gone, OutboundFull as unconfirmed."""
        a, b, c, d, e = (FakeConnection() for _ in range(5))
        d.delivered = fail(NotLive())
        e.delivered = fail(OutboundFull())
        result = confirm_all([a, b, c, d, e], b"x", True, 5)
        a.confirmed.callback(None)
        b.confirmed.errback(Unconfirmed())
        c.confirmed.errback(Gone())
        self.assertEqual(self.successResultOf(result), Tally(1, 2, 2))
        self.assertTrue(self.successResultOf(confirm_all([], b"", True, 1)).none)

    def test_timeout_values(self):
        """confirm= accepts 0 < s <= 60, and refuses the rest with a reason."""
        self.assertEqual(confirm_timeout("0.25"), 0.25)
        self.assertEqual(confirm_timeout("60"), 60)
        for bad in ("0", "60.01", "nan", "inf", "", "1s"):
            self.assertRaises(ValueError, confirm_timeout, bad)
