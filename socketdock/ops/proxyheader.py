"""
The PROXY protocol header (v1 and v2) in front of a listener, for endpoint
strings that start with ``haproxy:``: the peer a connection reports is the one
the load balancer names, not the balancer itself.

Twisted's own wrapper (``twisted.protocols.haproxy``, which the ``haproxy:``
endpoint string names) takes any text for an address, so control bytes and
paths reached the log and the backend as a peer; takes ports out of range;
raises on a non-UTF-8 address or a non-numeric port; refuses the valid
minimal ``PROXY UNKNOWN``; and waits for a half-sent v2 header (up to 64 KiB)
as long as the connection is allowed to idle.  Here only IP addresses and
ports in range are taken, anything else closes the connection without a log
line, ``UNKNOWN`` (and v2's ``LOCAL`` or an unspecified family) leaves the
connection's own addresses, and the whole header must arrive within
:data:`HEADER_DEADLINE` seconds of the connection, measured on the
reactor's clock.
"""

from __future__ import annotations

import ipaddress
import re

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamServerEndpoint
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

#: Seconds from a connection's start within which its whole header must arrive.
HEADER_DEADLINE = 5.0
#: The longest v1 header, its CRLF included (the protocol's own bound).
V1_LIMIT = 107
#: The most bytes a v2 header may carry after its 16 fixed bytes: the largest
#: address block (216, AF_UNIX) and room for the TLVs balancers add.
V2_LIMIT = 4096

_V1 = b"PROXY "
_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")

#: The proxied (source, destination), or None for the connection's own.
Addresses = tuple[IAddress, IAddress] | None


class BadHeader(Exception):
    """Not a PROXY header this listener takes; the connection is closed."""


def parse_header(data: bytes) -> tuple[Addresses, int] | None:
    """
    The PROXY header at the start of ``data``.

    :returns: None while the header is incomplete; else the proxied
        addresses (None: keep the connection's own) and the header's length.
    :raises BadHeader: ``data`` does not start with a header this listener takes.
    """
    if data.startswith(_V2):
        return _parse_v2(data)
    if data.startswith(_V1):
        return _parse_v1(data)
    if _V2.startswith(data) or _V1.startswith(data):
        return None
    raise BadHeader("no PROXY header")


def _parse_v1(data: bytes) -> tuple[Addresses, int] | None:
    end = data.find(b"\r\n", 0, V1_LIMIT)
    if end < 0:
        if len(data) >= V1_LIMIT:
            raise BadHeader(f"a v1 header longer than {V1_LIMIT} bytes")
        return None
    fields = data[:end].split(b" ")
    if fields[1] == b"UNKNOWN":  # what follows is to be ignored
        return None, end + 2
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise BadHeader("a v1 header is PROXY TCP4|TCP6 src dst sport dport, or PROXY UNKNOWN")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _address(version, _host(fields[2], version), _port(fields[4]))
    destination = _address(version, _host(fields[3], version), _port(fields[5]))
    return (source, destination), end + 2


def _host(text: bytes, version: int) -> str:
    try:
        host = text.decode("ascii")
        address = ipaddress.ip_address(host)
    except ValueError:  # UnicodeDecodeError included
        raise BadHeader("an address that is not an IP address") from None
    if address.version != version or "%" in host:
        raise BadHeader(f"an address that is not an IPv{version} address")
    return str(address)


def _port(text: bytes) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 65535:
        raise BadHeader("a port that is not a number from 0 to 65535")
    return int(text)


def _parse_v2(data: bytes) -> tuple[Addresses, int] | None:
    if len(data) < 16:
        return None
    version_command, family_transport = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2 or version_command & 0x0F > 1:
        raise BadHeader("a v2 header of another version or an unknown command")
    if length > V2_LIMIT:
        raise BadHeader(f"a v2 header carrying more than {V2_LIMIT} bytes")
    if len(data) < 16 + length:
        return None
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > 3 or transport > 2:
        raise BadHeader("a v2 header with an unknown family or transport")
    if version_command & 0x0F == 0 or family in (0, 3):
        # LOCAL (the balancer's own health check), an unspecified family or
        # a unix socket: the connection's own addresses stand.
        return None, 16 + length
    size, width = (12, 4) if family == 1 else (36, 16)
    if transport != 1 or length < size:
        raise BadHeader("a v2 header for TCP without its addresses")
    block = data[16 : 16 + size]
    version = 4 if family == 1 else 6
    ports = block[2 * width :]
    source = _address(
        version, str(ipaddress.ip_address(block[:width])), int.from_bytes(ports[:2], "big")
    )
    destination = _address(
        version,
        str(ipaddress.ip_address(block[width : 2 * width])),
        int.from_bytes(ports[2:], "big"),
    )
    return (source, destination), 16 + length


def _address(version: int, host: str, port: int) -> IAddress:
    return IPv4Address("TCP", host, port) if version == 4 else IPv6Address("TCP", host, port)


class ProxyHeaderProtocol(ProtocolWrapper):
    """
    Reads the header, then hands every later byte to the wrapped protocol and
    reports the proxied addresses as its peer and host.
    """

    factory: ProxyHeaderFactory

    def __init__(self, factory: ProxyHeaderFactory, wrappedProtocol) -> None:
        super().__init__(factory, wrappedProtocol)  # type: ignore[arg-type]  # a WrappingFactory
        # What has come of the header; None once it is read, and for good
        # once it was refused (``_refused``).
        self._pending: bytes | None = b""
        self._refused = False
        self._addresses: Addresses = None
        self._deadline: IDelayedCall | None = None

    def makeConnection(self, transport) -> None:
        self._deadline = self.factory.clock.callLater(HEADER_DEADLINE, self._refuse)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._pending is None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._refused:
            return
        pending = self._pending + data
        try:
            parsed = parse_header(pending)
        except BadHeader:
            self._refuse()
            return
        if parsed is None:
            self._pending = pending
            return
        self._addresses, used = parsed
        self._pending = None
        self._stop_deadline()
        if len(pending) > used:
            self.wrappedProtocol.dataReceived(pending[used:])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def getPeer(self) -> IAddress:
        if self._addresses is not None:
            return self._addresses[0]
        return super().getPeer()

    def getHost(self) -> IAddress:
        if self._addresses is not None:
            return self._addresses[1]
        return super().getHost()

    def _refuse(self) -> None:
        # Nothing has been written yet: closing is immediate.
        self._refused = True
        self._pending = b""
        self._stop_deadline()
        assert self.transport is not None
        self.transport.loseConnection()

    def _stop_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()


class ProxyHeaderFactory(WrappingFactory):
    """Wraps each connection of ``wrappedFactory`` in a :class:`ProxyHeaderProtocol`."""

    protocol = ProxyHeaderProtocol

    def __init__(self, wrappedFactory, clock: IReactorTime) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock

    def logPrefix(self) -> str:
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        name = inner() if inner is not None else type(self.wrappedFactory).__name__
        return f"{name} (PROXY)"


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """A server endpoint whose connections start with a PROXY header."""

    def __init__(self, wrapped: IStreamServerEndpoint, clock: IReactorTime) -> None:
        self._wrapped = wrapped
        self._clock = clock

    def listen(self, protocolFactory) -> Deferred:
        return self._wrapped.listen(ProxyHeaderFactory(protocolFactory, self._clock))


def server_endpoint(reactor, description: str, clock: IReactorTime) -> IStreamServerEndpoint:
    """
    ``serverFromString``, except that each ``haproxy:`` in front is this
    module's wrapper rather than Twisted's.

    :param clock: times each connection's :data:`HEADER_DEADLINE`.
    """
    if description.startswith("haproxy:"):
        inner = server_endpoint(reactor, description[len("haproxy:") :], clock)
        return ProxyHeaderEndpoint(inner, clock)
    return serverFromString(reactor, description)
