"""
The per-address handshake rate: a token bucket for each client address.

One client process could open 1,500 admitted handshakes a second, each one a
connect notice to the backend.  A bucket holds up to ``burst`` handshakes and
refills at ``rate`` a second; a handshake that finds it empty is refused
(429) before the backend is asked.

The table of buckets is bounded: a bucket that has been left alone long
enough to be full again says no more than no bucket at all, so it is dropped
(the table is kept in least-recently-used order, so those are found at its
front without a scan), and past :data:`MAX_ADDRESSES` the least recently used
goes even if it is not full (its address starts afresh: a burst more).
IPv6 clients are counted per /64, the block one subscriber usually gets.
"""

from __future__ import annotations

import ipaddress

#: Buckets kept at most (about 150 bytes each).
MAX_ADDRESSES = 100_000


def address_key(host: str) -> str:
    """The bucket an address counts against: itself, or its /64 for IPv6."""
    if ":" not in host:
        return host
    try:
        network = ipaddress.IPv6Network((host.split("%", 1)[0], 64), strict=False)
    except ValueError:
        return host
    return str(network.network_address)


class HandshakeRate:
    """
    Token buckets by client address, timed by ``clock``.

    :param clock: anything with ``seconds()`` (the reactor).
    :param rate: handshakes a second each address is allowed (> 0).
    :param burst: handshakes an address may make at once (>= 1).
    """

    def __init__(self, clock, rate: float, burst: int, max_addresses: int = MAX_ADDRESSES) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = float(burst)
        self._refilled_after = burst / rate
        self._max = max_addresses
        # address -> (tokens, when counted); insertion order is use order.
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def retry_after(self) -> int:
        """Whole seconds until a refused address has a token again (at most)."""
        return max(1, int(-(-1 // self._rate)))

    def allow(self, host: str) -> bool:
        """Take a token for one handshake from ``host``; False if there is none."""
        now = self._clock.seconds()
        key = address_key(host)
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens = self._burst
        else:
            tokens, then = entry
            tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._evict(now)
        return allowed

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            key = next(iter(buckets))
            if now - buckets[key][1] < self._refilled_after and len(buckets) <= self._max:
                return
            del buckets[key]
