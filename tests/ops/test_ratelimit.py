"""Tests for socketdock.ops.ratelimit: one log line per source and window."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.ratelimit import OncePerWindow


class OncePerWindowTests(SynchronousTestCase):
    def test_once_per_source_per_window(self):
        """The first occurrence is logged, the rest of the minute held back, and the next line counts them."""
        clock = Clock()
        once = OncePerWindow(clock, window=60)
        self.assertEqual(once.occurred("a"), 0)
        self.assertIsNone(once.occurred("a"))
        self.assertEqual(once.occurred("b"), 0)
        clock.advance(59)
        self.assertIsNone(once.occurred("a"))
        clock.advance(2)
        self.assertEqual(once.occurred("a"), 2)
        self.assertIsNone(once.occurred("a"))
        self.assertEqual(once.occurred("b"), 0)

    def test_sources_are_bounded(self):
        """A flood from many sources keeps at most ``sources`` windows in memory."""
        once = OncePerWindow(Clock(), sources=10)
        for n in range(1000):
            self.assertEqual(once.occurred(n), 0)
        self.assertLessEqual(len(once._seen), 10)
