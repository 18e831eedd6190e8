"""
Tests for socketdock.ws.flow (and the protocol it is mixed into): a client
that stops reading has its unsent bytes bounded, sends and pongs alike; a
client whose session is full is not read, even from frames already received.
"""

from __future__ import annotations

import os
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.ops.metrics import Metrics
from socketdock.relay.budget import ByteBudget
from socketdock.relay.registry import BudgetFull, OutboundFull, Registry
from socketdock.relay.session import Relay
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.protocol import RelayServerProtocol
from tests.ws.test_lifetime import HANDSHAKE, RecordingBackend, _Transport


def masked(opcode: int, payload: bytes) -> bytes:
    """One masked client frame of up to 125 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server's (unmasked) frames in ``data``: (opcode, payload)."""
    found = []
    while data:
        length, at = data[1] & 0x7F, 2
        if length == 126:
            length, at = struct.unpack("!H", data[2:4])[0], 4
        found.append((data[0] & 0x0F, data[at : at + length]))
        data = data[at + length :]
    return found


class FillingTransport(_Transport):
    """Pauses its producer on a write once told to: the write that fills the buffer."""

    protocol: RelayServerProtocol | None = None
    fill = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.fill and self.protocol is not None:
            self.protocol.pauseProducing()


class FlowTests(SynchronousTestCase):
    def open(self, max_message_size: int = 100, budget: int = 0):
        self.budget = ByteBudget(budget)
        registry = Registry()
        metrics = Metrics(active=registry.__len__, queued=lambda: 0)
        relay = Relay(RecordingBackend(), registry, metrics, Clock(), 8, budget=self.budget)
        factory = RelayServerFactory(relay, 0, max_message_size, Clock())
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = FillingTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(HANDSHAKE)
        self.assertIn(b"101 Switching Protocols", transport.value())
        transport.clear()
        transport.protocol = protocol
        return protocol, transport

    def test_sends_refused_past_twice_max_message_size(self) -> None:
        """While paused, sends wait up to twice max_message_size; past it they fail, until the client reads."""
        protocol, transport = self.open(max_message_size=100)
        protocol.pauseProducing()
        self.successResultOf(protocol.deliver(b"a" * 150, False))
        self.failureResultOf(protocol.deliver(b"b" * 60, False), OutboundFull)
        self.assertEqual(self.budget.used, 150)
        self.assertEqual([p for _, p in frames(transport.value())], [b"a" * 150])
        protocol.resumeProducing()
        self.assertEqual(self.budget.used, 0)
        self.successResultOf(protocol.deliver(b"b" * 60, False))

    def test_instance_budget(self) -> None:
        """Past the instance's budget a paused client's send fails with BudgetFull."""
        protocol, _ = self.open(max_message_size=1000, budget=100)
        protocol.pauseProducing()
        self.successResultOf(protocol.deliver(b"a" * 80, False))
        self.failureResultOf(protocol.deliver(b"b" * 30, False), BudgetFull)

    def test_the_write_that_fills_the_buffer_counts(self) -> None:
        """A message whose write paused the connection waits for the client too, and is given back on resume."""
        protocol, transport = self.open()
        transport.fill = True
        self.successResultOf(protocol.deliver(b"x" * 70, True))
        self.assertEqual(self.budget.used, 70)
        transport.fill = False
        protocol.resumeProducing()
        self.assertEqual(self.budget.used, 0)

    def test_pongs_past_the_bound_close_with_1008(self) -> None:
        """Pongs to a client that does not read count as unsent; past the bound it is closed with 1008."""
        protocol, transport = self.open(max_message_size=100)
        protocol.pauseProducing()
        protocol.dataReceived(masked(0x9, b"p" * 120))
        self.assertEqual(self.budget.used, 122)
        protocol.dataReceived(masked(0x9, b"q" * 120))
        sent = frames(transport.value())
        self.assertEqual([opcode for opcode, _ in sent], [0xA, 0x8])
        self.assertEqual(struct.unpack("!H", sent[1][1][:2])[0], 1008)
        self.assertEqual(self.budget.used, 122)

    def test_paused_reading_leaves_read_frames_buffered(self) -> None:
        """Frames read after pause_reading wait in Autobahn's buffer until resume_reading."""
        protocol, transport = self.open()
        protocol.pause_reading()
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(masked(0x1, b"one") + masked(0x1, b"two"))
        self.assertEqual(protocol.describe()["messages_in"], 0)
        protocol.resume_reading()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(protocol.describe()["messages_in"], 2)
