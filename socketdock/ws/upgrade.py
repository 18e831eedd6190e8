"""
The WebSocket upgrade inside twisted.web: the resource at ``wspath`` hands
the request's connection over to the relay's WebSocket protocol.
"""

from __future__ import annotations

from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from socketdock.ops.filelimit import hand_over
from socketdock.ws.protocol import RelayServerFactory


class WebSocketUpgrade(Resource):
    """
    Hands an upgrade request's connection over to the WebSocket protocol.

    Unlike Autobahn's own ``WebSocketResource`` it replays each header value on
    its own line, so repeated headers reach the backend joined by ``", "``
    (SPEC §3), and it detaches twisted.web's idle timeout and producer from
    the transport it gives away.
    """

    isLeaf = True

    def __init__(self, factory: RelayServerFactory) -> None:
        super().__init__()
        self._factory = factory

    def render(self, request):
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"no WebSocket endpoint at this path\n"
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
        protocol.release = hand_over(channel)  # type: ignore[attr-defined]  # a RelayServerProtocol
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
