"""The per-address handshake rate's token buckets, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ws.ratelimit import HandshakeRate, address_key


class HandshakeRateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_burst_then_rate(self) -> None:
        """A burst of 3 at once, then one every half second at 2/s."""
        rate = HandshakeRate(self.clock, 2.0, 3)
        self.assertEqual([rate.allow("10.0.0.1") for _ in range(4)], [True, True, True, False])
        self.clock.advance(0.25)
        self.assertFalse(rate.allow("10.0.0.1"))
        self.clock.advance(0.25)
        self.assertEqual([rate.allow("10.0.0.1"), rate.allow("10.0.0.1")], [True, False])
        # Another address has its own bucket.
        self.assertTrue(rate.allow("10.0.0.2"))

    def test_refills_up_to_the_burst_only(self) -> None:
        """An hour of silence gives back the burst, not 7,200 handshakes."""
        rate = HandshakeRate(self.clock, 2.0, 3)
        rate.allow("10.0.0.1")
        self.clock.advance(3600)
        self.assertEqual(sum(rate.allow("10.0.0.1") for _ in range(10)), 3)

    def test_idle_buckets_are_evicted(self) -> None:
        """Buckets full again (idle for burst/rate seconds) are dropped at the next handshake."""
        rate = HandshakeRate(self.clock, 10.0, 5)
        for i in range(1000):
            rate.allow(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(rate), 1000)
        self.clock.advance(0.5)
        rate.allow("192.0.2.1")
        self.assertEqual(len(rate), 1)

    def test_table_is_bounded(self) -> None:
        """Past max_addresses the least recently used bucket goes, even if not idle."""
        rate = HandshakeRate(self.clock, 1.0, 1, max_addresses=100)
        for i in range(10_000):
            rate.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        self.assertEqual(len(rate), 100)

    def test_ipv6_counts_per_64(self) -> None:
        """Addresses of one IPv6 /64 share a bucket; IPv4 and odd hosts are their own key."""
        self.assertEqual(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::")
        self.assertEqual(address_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::")
        self.assertEqual(address_key("192.0.2.7"), "192.0.2.7")
        self.assertEqual(address_key("fe80::1%eth0"), "fe80::")
        rate = HandshakeRate(self.clock, 1.0, 2)
        self.assertEqual(
            [rate.allow("2001:db8::1"), rate.allow("2001:db8::2"), rate.allow("2001:db8::3")],
            [True, True, False],
        )

    def test_retry_after(self) -> None:
        """Whole seconds until a token is back: at least 1."""
        self.assertEqual(HandshakeRate(self.clock, 0.5, 1).retry_after, 2)
        self.assertEqual(HandshakeRate(self.clock, 0.3, 1).retry_after, 4)
        self.assertEqual(HandshakeRate(self.clock, 50.0, 1).retry_after, 1)
