"""
The PROXY header in front of a ``haproxy:`` listener (socketdock/ops/proxyheader.py):
through the listener ``assembly.make_service`` builds, on a MemoryReactorClock, and
the parser on its own.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from socketdock.assembly import make_service
from socketdock.config.settings import load_config
from socketdock.ops.proxyheader import (
    HEADER_DEADLINE,
    V2_LIMIT,
    BadHeader,
    parse_header,
)
from socketdock.tuning import PLAIN, TUNED

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
OWN = IPv4Address("TCP", "127.0.0.9", 40000)
V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, body: bytes, length: int | None = None) -> bytes:
    """A v2 header: version 2 and ``command``, ``family`` (high nibble) | STREAM."""
    size = len(body) if length is None else length
    return V2 + bytes([0x20 | command, family << 4 | 1]) + struct.pack("!H", size) + body


def v2_inet(source: str, destination: str, sport: int, dport: int, extra: bytes = b"") -> bytes:
    block = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
    family = 1 if ipaddress.ip_address(source).version == 4 else 2
    return v2(1, family, block + struct.pack("!HH", sport, dport) + extra)


class ListenerTests(SynchronousTestCase):
    """The ``listen`` listener of a service built with ``haproxy:tcp:...`` (plain stack)."""

    stack = PLAIN

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        config = load_config(
            {"listen": "haproxy:tcp:0:interface=127.0.0.1", "externalhostandport": "h:1"},
            {},
            None,
        )
        service = make_service(config, self.reactor, self.stack)
        service.startService()
        self.addCleanup(service.stopService)
        ((_, self.factory, _, _),) = self.reactor.tcpServers

    def connect(self, *pieces: bytes):
        """A connection from OWN that is sent ``pieces``; nothing may be logged."""
        protocol = self.factory.buildProtocol(OWN)
        assert protocol is not None
        transport = StringTransport(peerAddress=OWN)
        protocol.makeConnection(transport)
        with capturedLogs() as events:
            for piece in pieces:
                protocol.dataReceived(piece)
        self.assertEqual(events, [])
        return protocol, transport

    def assertRefused(self, *pieces: bytes) -> None:
        _, transport = self.connect(*pieces)
        self.assertEqual(transport.value(), b"", pieces)
        self.assertTrue(transport.disconnecting, pieces)

    def assertAnswered(self, protocol, transport) -> None:
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:60])
        self.assertFalse(transport.disconnecting)

    def test_v1_addresses(self) -> None:
        """TCP4 and TCP6 lines name the peer and the host; the request that follows is served."""
        protocol, transport = self.connect(b"PROXY TCP4 10.0.0.1 10.0.0.2 99 80\r\n" + HEALTHZ)
        self.assertAnswered(protocol, transport)
        self.assertEqual(protocol.getPeer(), IPv4Address("TCP", "10.0.0.1", 99))
        self.assertEqual(protocol.getHost(), IPv4Address("TCP", "10.0.0.2", 80))
        protocol, transport = self.connect(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", HEALTHZ)
        self.assertAnswered(protocol, transport)
        self.assertEqual(protocol.getPeer(), IPv6Address("TCP", "2001:db8::1", 65535))

    def test_v1_byte_by_byte(self) -> None:
        line = b"PROXY TCP4 10.0.0.1 10.0.0.2 99 80\r\n" + HEALTHZ
        protocol, transport = self.connect(*(line[i : i + 1] for i in range(len(line))))
        self.assertAnswered(protocol, transport)
        self.assertEqual(protocol.getPeer(), IPv4Address("TCP", "10.0.0.1", 99))

    def test_unknown(self) -> None:
        """The minimal ``PROXY UNKNOWN``, or with addresses after it: the connection's own peer."""
        for line in [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"]:
            protocol, transport = self.connect(line + HEALTHZ)
            self.assertAnswered(protocol, transport)
            self.assertEqual(protocol.getPeer(), OWN)

    def test_v1_refusals(self) -> None:
        """Anything but IP addresses of the line's family and ports 0..65535: closed, quietly."""
        for line in [
            b"PROXY TCP4 10.0.0.1:99/../x 10.0.0.2 99 80",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 -5 80",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 http 80",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 99 65536",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 +99 80",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 \xd9\xa9 80",  # an Arabic-Indic digit
            b"PROXY TCP4 \xff\xfe 10.0.0.2 99 80",
            b"PROXY TCP4 \x1b[31m\x07 10.0.0.2 99 80",
            b"PROXY TCP4 ::1 10.0.0.2 99 80",
            b"PROXY TCP6 10.0.0.1 ::1 99 80",
            b"PROXY TCP6 fe80::1%eth0 ::1 99 80",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 99",
            b"PROXY TCP4  10.0.0.1 10.0.0.2 99 80",
            b"PROXY TCP5 10.0.0.1 10.0.0.2 99 80",
            b"PROXY UNKNOWNX",
            b"PROXY " + b"x" * 120,
            b"GET /healthz HTTP/1.1",
        ]:
            self.assertRefused(line + b"\r\n" + HEALTHZ)

    def test_v2_addresses(self) -> None:
        header = v2_inet("192.0.2.1", "192.0.2.2", 5000, 443, extra=b"\x04\x00\x01x")
        protocol, transport = self.connect(header + HEALTHZ)
        self.assertAnswered(protocol, transport)
        self.assertEqual(protocol.getPeer(), IPv4Address("TCP", "192.0.2.1", 5000))
        protocol, transport = self.connect(v2_inet("2001:db8::7", "::1", 1, 2), HEALTHZ)
        self.assertEqual(protocol.getPeer(), IPv6Address("TCP", "2001:db8::7", 1))

    def test_v2_local_and_unspecified(self) -> None:
        """LOCAL (a balancer's health check) and AF_UNSPEC keep the connection's own peer."""
        for header in [v2(0, 1, b"\x00" * 12), v2(1, 0, b""), v2(1, 3, b"\x00" * 216)]:
            protocol, transport = self.connect(header + HEALTHZ)
            self.assertAnswered(protocol, transport)
            self.assertEqual(protocol.getPeer(), OWN)

    def test_v2_refusals(self) -> None:
        for header in [
            v2(1, 1, b"\x00" * 8),  # too short for AF_INET's addresses
            v2(2, 1, b"\x00" * 12),  # an unknown command
            V2 + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1
            v2(1, 5, b"\x00" * 12),  # an unknown family
            v2(1, 1, b"", length=V2_LIMIT + 1),  # more than this listener reads
        ]:
            self.assertRefused(header + HEALTHZ)

    def test_half_sent_header_meets_the_deadline(self) -> None:
        """A v2 header sent half way is closed at the deadline, not the HTTP idle timeout."""
        header = v2_inet("192.0.2.1", "192.0.2.2", 5000, 443, extra=b"\x00" * 1000)
        _, transport = self.connect(header[:500])
        self.reactor.advance(HEADER_DEADLINE - 0.1)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_trickled_header_meets_the_deadline(self) -> None:
        """One byte a second does not stretch the deadline."""
        header = b"PROXY TCP4 10.0.0.1 10.0.0.2 99 80\r\n"
        protocol, transport = self.connect()
        for byte in header[: int(HEADER_DEADLINE)]:
            protocol.dataReceived(bytes([byte]))
            self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_no_deadline_after_the_header(self) -> None:
        """Once the header is in, the connection is the HTTP channel's to time out."""
        _, transport = self.connect(b"PROXY UNKNOWN\r\n")
        self.reactor.advance(HEADER_DEADLINE * 2)
        self.assertFalse(transport.disconnecting)


class TunedListenerTests(ListenerTests):
    """The same on the tuned stack's channel and network."""

    stack = TUNED


class ParseTests(SynchronousTestCase):
    """parse_header on its own: incomplete, complete, refused."""

    def test_incomplete(self) -> None:
        for data in [
            b"",
            b"P",
            b"PROXY ",
            b"PROXY TCP4 1.2.3.4",
            V2[:5],
            V2,
            v2_inet("1.2.3.4", "1.2.3.5", 1, 2)[:20],
        ]:
            self.assertIsNone(parse_header(data), data)

    def test_lengths(self) -> None:
        """The header's length is returned, so what follows it is kept."""
        header = v2_inet("1.2.3.4", "1.2.3.5", 1, 2)
        parsed = parse_header(header + b"rest")
        assert parsed is not None
        self.assertEqual(parsed[1], len(header))
        self.assertEqual(parse_header(b"PROXY UNKNOWN\r\nrest"), (None, 15))

    def test_not_a_header(self) -> None:
        for data in [b"GET", b"\r\n\r\n\x01", b"proxy "]:
            self.assertRaises(BadHeader, parse_header, data)
