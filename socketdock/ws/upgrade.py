"""
The WebSocket upgrade inside twisted.web: the resource at ``wspath`` hands
the request's connection over to the relay's WebSocket protocol.
"""

from __future__ import annotations

import re

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from socketdock.ops.filelimit import hand_over
from socketdock.ws.factory import RelayServerFactory
from socketdock.ws.refusal import printable
from socketdock.ws.report import handshake_refused

#: What no header value may hold (RFC 9110 §5.5): controls other than HTAB, and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Header names are tokens; anything else is shown as this.
_NAME = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}\Z")


def _header_with_control_character(request) -> bytes | None:
    """The (printable) name of the first header whose value has a control character."""
    for name, values in request.requestHeaders.getAllRawHeaders():
        if any(_CONTROL.search(value) for value in values):
            return name if _NAME.match(name) else b"unnamed"
    return None


def _peer(address) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return printable(f"{host}:{port}") if host is not None else "unknown"


class WebSocketUpgrade(Resource):
    """
    Hands an upgrade request's connection over to the WebSocket protocol.

    Unlike Autobahn's own ``WebSocketResource`` it replays each header value on
    its own line, so repeated headers reach the backend joined by ``", "``
    (SPEC §3), and it detaches twisted.web's idle timeout and producer from
    the transport it gives away.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, factory: RelayServerFactory) -> None:
        super().__init__()
        self._factory = factory

    def render(self, request):
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"no WebSocket endpoint at this path\n"
        bad = _header_with_control_character(request)
        if bad is not None:
            # Decided here, the same on every Autobahn release (26.11 began to
            # refuse what 26.10 let through) and on both HTTP channels; counted
            # and logged as the protocol's own refusals are.
            why = f"control character in the {bad.decode('ascii')} header"
            handshake_refused(
                self._log,
                self._factory.hub.metrics,
                _peer(request.getClientAddress()),
                400,
                "bad_request",
                why,
            )
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"connection", b"close")
            request.channel.persistent = False  # and close once answered
            return why.encode("ascii") + b"\n"
        channel = request.channel
        transport = channel.transport
        protocol = self._factory.buildProtocol(transport.getPeer())
        assert protocol is not None  # the WebSocket factory accepts every peer
        channel.setTimeout(None)
        transport.unregisterProducer()
        channel.transport = None
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        # The connection's place under the listener's cap goes with it.
        protocol.release = hand_over(channel)
        protocol.makeConnection(transport)
        transport.registerProducer(protocol, True)
        # twisted.web paused reading while it handled the request; nothing else
        # will come for it now.
        transport.resumeProducing()
        lines = [request.method + b" " + request.uri + b" HTTP/1.1"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            lines.extend(name + b": " + value for value in values)
        # Bytes the client sent after the request's headers belong to the
        # WebSocket: the tuned channel keeps them unparsed for takeBuffered;
        # twisted.web's own (a LineReceiver) holds the rest of this read in
        # _buffer, and would parse it as HTTP once render returns.
        take = getattr(channel, "takeBuffered", None)
        rest = b""
        if take is not None:
            rest = take()
        elif isinstance(getattr(channel, "_buffer", None), bytes):
            rest, channel._buffer = channel._buffer, b""
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + request.content.read() + rest)
        return NOT_DONE_YET
