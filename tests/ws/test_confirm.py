"""The confirm pings of one connection (socketdock.ws.confirm), on a Clock."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.relay.confirm import Gone, Unconfirmed
from socketdock.ws.confirm import TOKEN_SIZE, Confirmer, number_of, token
from socketdock.ws.keepalive import Keepalive


class ConfirmerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pings: list[bytes] = []
        self.confirmer = Confirmer(self.clock, self.pings.append)
        self.confirmer.open()

    def test_tokens_are_never_keepalive_payloads(self):
        """A confirm token is 8 bytes starting with c; keepalive's digits are never one."""
        self.assertEqual(len(token(1)), TOKEN_SIZE)
        self.assertEqual(number_of(token(2**40)), 2**40)
        for keepalive_payload in (b"1", b"12345678", b"99999999"):
            self.assertIsNone(number_of(keepalive_payload))

    def test_one_ping_per_turn_shared_by_every_confirm(self):
        """Three confirms asked in one turn share one ping; its pong settles all three."""
        waits = [self.confirmer.confirm(5) for _ in range(3)]
        self.assertEqual(self.pings, [])
        self.clock.advance(0)
        self.assertEqual(self.pings, [token(1)])
        self.confirmer.pong(token(1))
        for d in waits:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.confirmer), 0)

    def test_a_pong_for_a_later_ping_settles_earlier_ones(self):
        """A pong for ping 2 settles the confirms of ping 1 and 2 (a peer may answer only the latest)."""
        first = self.confirmer.confirm(5)
        self.clock.advance(0)
        second = self.confirmer.confirm(5)
        self.clock.advance(0)
        self.assertEqual(self.pings, [token(1), token(2)])
        self.confirmer.pong(token(1))
        self.successResultOf(first)
        self.assertNoResult(second)
        self.confirmer.pong(token(2))
        self.successResultOf(second)

    def test_a_confirm_asked_after_a_ping_waits_for_the_next(self):
        """The pong of a ping sent before the confirm was asked does not settle it."""
        self.confirmer.confirm(5)
        self.clock.advance(0)
        later = self.confirmer.confirm(5)
        self.confirmer.pong(token(1))
        self.assertNoResult(later)

    def test_foreign_pongs_settle_nothing(self):
        """Keepalive pongs, unsolicited pongs and tokens not sent yet settle nothing."""
        d = self.confirmer.confirm(5)
        self.clock.advance(0)
        for payload in (b"1", b"", b"hello", token(2), token(1)[:-1]):
            self.confirmer.pong(payload)
        self.assertNoResult(d)

    def test_keepalive_ignores_confirm_pongs(self):
        """A keepalive waiting for its pong is not satisfied by a confirm pong, and drops the peer."""
        dropped = []
        sent: list[bytes] = []
        keepalive = Keepalive(self.clock, 1, 1, sent.append, lambda: dropped.append(True))
        keepalive.start()
        self.clock.advance(1)
        keepalive.pong(token(1))
        self.clock.advance(1)
        self.assertEqual(dropped, [True])

    def test_timeout(self):
        """No pong within the timeout fails with Unconfirmed, and only that confirm."""
        short = self.confirmer.confirm(0.5)
        long = self.confirmer.confirm(5)
        self.clock.advance(0.5)
        self.failureResultOf(short, Unconfirmed)
        self.assertNoResult(long)
        self.confirmer.pong(token(1))
        self.successResultOf(long)

    def test_gone(self):
        """Closing fails every waiting confirm with Gone, and any later one at once."""
        d = self.confirmer.confirm(5)
        self.confirmer.gone()
        self.failureResultOf(d, Gone)
        self.failureResultOf(self.confirmer.confirm(5), Gone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pending_handshake_pings_once_open(self):
        """Before open no ping goes out; the timeout runs from the request."""
        clock = Clock()
        pings: list[bytes] = []
        confirmer = Confirmer(clock, pings.append)
        d = confirmer.confirm(2)
        clock.advance(1)
        self.assertEqual(pings, [])
        confirmer.open()
        clock.advance(0)
        self.assertEqual(pings, [token(1)])
        clock.advance(1)
        self.failureResultOf(d, Unconfirmed)

    def test_cancel_forgets_the_confirm(self):
        """A cancelled confirm (its frame was never sent) leaves no timer and no ping."""
        d = self.confirmer.confirm(5)
        d.addErrback(lambda _: None)
        d.cancel()
        self.clock.advance(0)
        self.assertEqual((self.pings, self.clock.getDelayedCalls()), ([], []))
