"""Subscriptions over a fake link: holds, releases and the link going while they wait."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socketdock.cluster.scripts import Names
from socketdock.cluster.subscriptions import Subscriptions
from tests.cluster.fakes import FakeLink, FakeRedis

NAMES = Names.for_db(0)
CHANNEL = NAMES.tag_channel("room")


class SubscriptionsTests(SynchronousTestCase):
    """Reference-counted tag subscriptions, without Redis."""

    def setUp(self) -> None:
        self.redis = FakeRedis()
        self.link = FakeLink(self.redis)
        self.subscriptions = Subscriptions(self.link, NAMES)

    def test_first_hold_subscribes_last_release_unsubscribes(self) -> None:
        self.successResultOf(self.subscriptions.hold("room"))
        self.successResultOf(self.subscriptions.hold("room"))
        self.assertTrue(self.subscriptions.confirmed("room"))
        self.subscriptions.release("room")
        self.assertEqual(self.redis.subscribers(CHANNEL), 1)
        self.subscriptions.release("room")
        self.assertEqual(self.redis.subscribers(CHANNEL), 0)
        self.assertEqual(self.subscriptions.held(), 0)

    def test_hold_waits_for_the_confirmation(self) -> None:
        self.link.holding = True
        held = self.subscriptions.hold("room")
        self.assertNoResult(held)
        self.assertFalse(self.subscriptions.confirmed("room"))
        self.link.answer()
        self.successResultOf(held)
        self.assertTrue(self.subscriptions.confirmed("room"))

    def test_link_lost_while_subscribing(self) -> None:
        """The hold fires (it must not hold up a handshake); the next link subscribes."""
        self.link.holding = True
        held = self.subscriptions.hold("room")
        self.link.go_down()
        self.successResultOf(held)
        self.assertFalse(self.subscriptions.confirmed("room"))
        self.assertEqual(self.subscriptions.held(), 1)
        self.link.reconnect()
        self.link.holding = False
        self.successResultOf(self.subscriptions.restore())
        self.assertTrue(self.subscriptions.confirmed("room"))
        self.assertEqual(self.redis.subscribers(CHANNEL), 1)

    def test_hold_while_down_subscribes_at_restore(self) -> None:
        self.link.go_down()
        self.successResultOf(self.subscriptions.hold("room"))
        self.assertEqual(self.link.pending, [])
        self.link.reconnect()
        self.successResultOf(self.subscriptions.restore())
        self.assertTrue(self.subscriptions.confirmed("room"))

    def test_released_while_subscribing(self) -> None:
        """A confirmation arriving after the last release does not count it subscribed."""
        self.link.holding = True
        held = self.subscriptions.hold("room")
        self.subscriptions.release("room")
        self.assertEqual(self.link.names(), ["SUBSCRIBE", "UNSUBSCRIBE"])
        self.link.answer(0)
        self.link.answer(0)
        self.successResultOf(held)
        self.assertFalse(self.subscriptions.confirmed("room"))
        self.assertEqual(self.redis.subscribers(CHANNEL), 0)

    def test_held_again_before_the_first_confirmation(self) -> None:
        """Hold, release, hold: only the last SUBSCRIBE's confirmation counts."""
        self.link.holding = True
        first = self.subscriptions.hold("room")
        self.subscriptions.release("room")
        second = self.subscriptions.hold("room")
        self.assertEqual(self.link.names(), ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"])
        self.link.answer(0)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertFalse(self.subscriptions.confirmed("room"))
        self.link.answer(0)
        self.link.answer(0)
        self.successResultOf(second)
        self.assertTrue(self.subscriptions.confirmed("room"))
        self.assertEqual(self.redis.subscribers(CHANNEL), 1)

    def test_release_after_the_link_went(self) -> None:
        self.successResultOf(self.subscriptions.hold("room"))
        self.link.go_down()
        self.subscriptions.lost_link()
        self.subscriptions.release("room")
        self.assertEqual(self.subscriptions.held(), 0)
        self.link.reconnect()
        self.successResultOf(self.subscriptions.restore())
        self.assertEqual(self.redis.subscribers(CHANNEL), 0)

    def test_unsubscribe_lost_with_the_link_is_no_error(self) -> None:
        self.successResultOf(self.subscriptions.hold("room"))
        self.link.holding = True
        self.subscriptions.release("room")
        self.link.go_down()
        self.assertEqual(self.flushLoggedErrors(), [])
