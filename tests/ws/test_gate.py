"""
Tests for socketdock.ws.gate: the handshake's refusals before the backend is
asked, in their order, and the count of handshakes waiting for it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.metrics import Metrics
from socketdock.relay.admission import Admissions, Entry, Refused
from socketdock.relay.backend import LoopbackBackend
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay
from socketdock.ws.gate import Gate, RateLimited
from socketdock.ws.origins import OriginPolicy
from socketdock.ws.ratelimit import HandshakeRate

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
DEFLATE_BAD = [("permessage-deflate", {"foo": ["bar"]})]


def socket() -> Any:
    """What the registry needs of a client until it is admitted."""
    return SimpleNamespace(connection_id="", tags=(), backend_state=None)


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = Registry()
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        self.relay = Relay(LoopbackBackend(), self.registry, metrics, self.clock, 8)
        self.peers: list[int] = []

    def peer(self) -> IPv4Address:
        self.peers.append(1)
        return PEER

    def gate(self, **kwargs: Any) -> Gate:
        max_connections = kwargs.pop("max_connections", 0)
        return Gate(Admissions(self.relay, max_connections), **kwargs)

    def enter(self, gate: Gate, origin: str | None = None, extensions=()) -> Entry | Refused:
        return gate.enter(socket(), self.peer, origin, extensions)

    def test_admits_and_counts_pending(self) -> None:
        """An admitted handshake is live and pending until answered; the peer is not even asked without a rate."""
        gate = self.gate()
        entry = self.enter(gate)
        self.assertIsInstance(entry, Entry)
        self.assertEqual((gate.pending, len(self.registry), self.peers), (1, 1, []))
        self.assertEqual(gate.answered("answer"), "answer")
        self.assertEqual(gate.pending, 0)

    def test_pending_bound(self) -> None:
        """At max_pending waiting handshakes the next is refused 503 'pending', and admitted again once one is answered."""
        gate = self.gate(max_pending=2)
        self.enter(gate)
        self.enter(gate)
        refused = self.enter(gate)
        assert isinstance(refused, Refused)
        self.assertEqual((refused.status, refused.label), (503, "pending"))
        gate.answered(None)
        self.assertIsInstance(self.enter(gate), Entry)

    def test_origin(self) -> None:
        """An origin the policy does not allow is refused 403; no Origin header is not checked."""
        gate = self.gate(origins=OriginPolicy(["https://app.example"]))
        refused = self.enter(gate, origin="https://evil.example")
        assert isinstance(refused, Refused)
        self.assertEqual((refused.status, refused.label), (403, "origin"))
        self.assertIsInstance(self.enter(gate, origin="https://app.example"), Entry)
        self.assertIsInstance(self.enter(gate), Entry)

    def test_relay_closed(self) -> None:
        """A full relay refuses with its own answer (503 'capacity'), before anyone is registered."""
        gate = self.gate(max_connections=1)
        self.enter(gate)
        refused = self.enter(gate)
        assert isinstance(refused, Refused)
        self.assertEqual((refused.status, refused.label, len(self.registry)), (503, "capacity", 1))

    def test_bad_extension_offer(self) -> None:
        """A permessage-deflate offer Autobahn could not parse is refused 400 before the backend hears of it."""
        gate = self.gate()
        refused = self.enter(gate, extensions=DEFLATE_BAD)
        assert isinstance(refused, Refused)
        self.assertEqual((refused.status, refused.label), (400, "bad_request"))
        self.assertEqual((gate.pending, len(self.registry)), (0, 0))

    def test_rate_first_and_counts_every_attempt(self) -> None:
        """The rate counts refused attempts too (here for origin), and says when to retry."""
        rate = HandshakeRate(self.clock, 1, 2)
        gate = self.gate(origins=OriginPolicy(["https://app.example"]), rate=rate)
        for _ in range(2):
            refused = self.enter(gate, origin="https://evil.example")
            assert isinstance(refused, Refused)
            self.assertEqual(refused.label, "origin")
        limited = self.enter(gate, origin="https://app.example")
        assert isinstance(limited, RateLimited)
        self.assertEqual((limited.status, limited.label, limited.retry_after), (429, "rate", 1))
        self.clock.advance(1)
        self.assertIsInstance(self.enter(gate, origin="https://app.example"), Entry)
        self.assertEqual(len(self.peers), 4)

    def test_order_of_refusals(self) -> None:
        """Origin before the pending bound, a stopping relay before it, the pending bound before a bad offer."""
        gate = self.gate(origins=OriginPolicy(["https://app.example"]), max_pending=1)
        self.enter(gate)
        labels = [
            self.enter(gate, "https://evil.example", DEFLATE_BAD),
            self.enter(gate, None, DEFLATE_BAD),
        ]
        self.relay.draining = True
        labels.append(self.enter(gate, None, DEFLATE_BAD))
        self.assertEqual(
            [r.label for r in labels if isinstance(r, Refused)], ["origin", "pending", "draining"]
        )
