"""
A WebSocket test client on Autobahn, for end-to-end tests over real loopback sockets.

Every wait is a Deferred (no sleeps)::

    client = yield connect_client(reactor, "ws://127.0.0.1:%d/ws" % port)
    self.addCleanup(client.shutdown)
    client.send_text("hi")
    payload, is_binary = yield client.next_message()

A refused upgrade errbacks :func:`connect_client` with :class:`HandshakeRefused`.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import parseHttpHeader
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.python.failure import Failure

CloseInfo = tuple[bool, int | None, str | None]


@attrs.define
class HandshakeRefused(Exception):
    """
    The server answered the upgrade with something other than 101.

    :param status: the HTTP status code, e.g. 403.
    :param body: the response body (de-chunked), possibly empty.
    """

    status: int
    body: bytes

    def __str__(self) -> str:
        return f"upgrade refused with HTTP {self.status}: {self.body[:200]!r}"


@attrs.define
class HandshakeFailed(Exception):
    """The connection ended before the handshake finished, without an HTTP status."""

    reason: str


@attrs.define
class ClientClosed(Exception):
    """A :meth:`TestClient.next_message` or :meth:`TestClient.ping` outlived the socket."""

    was_clean: bool
    code: int | None
    reason: str | None


def _complete_body(headers: dict[str, str], raw: bytes) -> bytes | None:
    """Return the body of a refusal once all of it arrived, else ``None``."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, rest = b"", raw
        while True:
            line_end = rest.find(b"\r\n")
            if line_end < 0:
                return None
            size = int(rest[:line_end].split(b";")[0], 16)
            if size == 0:
                return body
            if len(rest) < line_end + 2 + size + 2:
                return None
            body += rest[line_end + 2 : line_end + 2 + size]
            rest = rest[line_end + 2 + size + 2 :]
    if "content-length" in headers:
        length = int(headers["content-length"])
        return raw[:length] if len(raw) >= length else None
    return None  # delimited by the end of the connection


class _Protocol(WebSocketClientProtocol):
    """Feeds Autobahn's callbacks into the :class:`TestClient` that owns it."""

    def __init__(self) -> None:
        super().__init__()
        self._refused: int | None = None

    def processHandshake(self) -> None:
        # Autobahn fails a non-101 answer at once (failHandshake + abort) and reports
        # only onClose(False, 1006, "...upgrade failed [403]...") with no onConnect:
        # the status is only in that string and the body is never read. So look at
        # the status line first and, on a refusal, keep reading until the body is in.
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            return
        words = self.data[: self.data.find(b"\r\n")].split()
        if len(words) < 2 or not words[1].isdigit() or int(words[1]) == 101:
            super().processHandshake()
            return
        self._refused = int(words[1])
        _, headers, _ = parseHttpHeader(self.data[: end + 4])
        if _complete_body(headers, self.data[end + 4 :]) is not None:
            self.failHandshake(f"upgrade refused with HTTP {self._refused}")

    def _refusal(self) -> HandshakeRefused | None:
        if self._refused is None:
            return None
        end = self.data.find(b"\r\n\r\n")
        _, headers, _ = parseHttpHeader(self.data[: end + 4])
        raw = self.data[end + 4 :]
        body = _complete_body(headers, raw)
        return HandshakeRefused(self._refused, raw if body is None else body)

    def onConnect(self, response: ConnectionResponse) -> None:
        self.factory.client._connected(response)

    def onOpen(self) -> None:
        self.factory.client._opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._message(payload, isBinary)

    def onPong(self, payload: bytes) -> None:
        self.factory.client._pong(payload)

    def onPing(self, payload: bytes) -> None:
        super().onPing(payload)  # answers it
        self.factory.client._pinged()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn's ``code`` is 1006 for any unclean end, even when the server did
        # send a close frame; remoteCloseCode is what the server actually sent (or
        # None when no close frame arrived), which is what SocketDock tests assert.
        self.factory.client._closed(
            (wasClean, self.remoteCloseCode, self.remoteCloseReason),
            self._refusal() or HandshakeFailed(str(reason)),
        )


class _Factory(WebSocketClientFactory):
    """Carries the :class:`TestClient` to its one protocol."""

    protocol = _Protocol
    noisy = False

    def __init__(self, client: TestClient, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    def buildProtocol(self, addr: Any) -> _Protocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, _Protocol)
        self.client.protocol = proto
        return proto


class TestClient:
    """One client connection; build it with :func:`connect_client`."""

    def __init__(self) -> None:
        #: The Autobahn protocol (``protocol.transport``, ``protocol.http_headers``).
        self.protocol: _Protocol | None = None
        #: The server's handshake answer (headers, negotiated subprotocol).
        self.response: ConnectionResponse | None = None
        self._opening: Deferred[TestClient] | None = Deferred()
        self._inbox: list[tuple[bytes, bool]] = []
        self._readers: list[Deferred[tuple[bytes, bool]]] = []
        self._pings: dict[bytes, Deferred[None]] = {}
        #: How many pings the server sent (each answered with a pong).
        self.pings_answered = 0
        self._ping_count_waiters: list[tuple[int, Deferred[int]]] = []
        self._close_info: CloseInfo | None = None
        self._close_waiters: list[Deferred[CloseInfo]] = []

    @property
    def selected_protocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        return None if self.response is None else self.response.protocol

    @property
    def closed(self) -> Deferred[CloseInfo]:
        """
        A new Deferred firing with ``(was_clean, code, reason)`` when the socket ends.

        ``code``/``reason`` are what the *server* sent; ``code`` is ``None`` when no
        close frame arrived (abort, dropped TCP). Each access is a fresh Deferred, so
        several waiters each get the result.
        """
        if self._close_info is not None:
            return succeed(self._close_info)
        d: Deferred[CloseInfo] = Deferred()
        self._close_waiters.append(d)
        return d

    def send_text(self, text: str) -> None:
        """Send one text message."""
        self._proto().sendMessage(text.encode("utf-8"), isBinary=False)

    def send_binary(self, data: bytes) -> None:
        """Send one binary message."""
        self._proto().sendMessage(data, isBinary=True)

    def next_message(self) -> Deferred[tuple[bytes, bool]]:
        """
        Fire with the next ``(payload, is_binary)``; earlier arrivals are queued.

        Errbacks with :class:`ClientClosed` if the socket ends first.
        """
        if self._inbox:
            return succeed(self._inbox.pop(0))
        if self._close_info is not None:
            return fail(ClientClosed(*self._close_info))
        d: Deferred[tuple[bytes, bool]] = Deferred()
        self._readers.append(d)
        return d

    def ping(self) -> Deferred[None]:
        """
        Send a ping and fire on its pong: a barrier proving the server has read every
        frame sent before it (frames are processed in order).
        """
        if self._close_info is not None:
            return fail(ClientClosed(*self._close_info))
        payload = os.urandom(8).hex().encode("ascii")
        d: Deferred[None] = Deferred()
        self._pings[payload] = d
        self._proto().sendPing(payload)
        return d

    def pinged(self, count: int) -> Deferred[int]:
        """
        Fire once the server has sent ``count`` pings (all answered); errbacks
        with :class:`ClientClosed` if the socket ends first.
        """
        if self.pings_answered >= count:
            return succeed(self.pings_answered)
        if self._close_info is not None:
            return fail(ClientClosed(*self._close_info))
        d: Deferred[int] = Deferred()
        self._ping_count_waiters.append((count, d))
        return d

    def close(self, code: int = 1000, reason: str = "") -> Deferred[CloseInfo]:
        """
        Start the closing handshake; fires like :attr:`closed`.

        Codes Autobahn refuses to send from ``sendClose`` (anything but 1000 and
        3000-4999, e.g. 1001 "going away") are sent raw, as a browser would.
        """
        proto = self._proto()
        if code == 1000 or 3000 <= code <= 4999:
            proto.sendClose(code, reason or None)
        else:
            proto.sendCloseFrame(code, reason.encode("utf-8") or None, isReply=False)
        return self.closed

    def abort(self) -> Deferred[CloseInfo]:
        """Drop the TCP connection with no close frame; fires like :attr:`closed`."""
        transport: Any = self._proto().transport
        transport.abortConnection()
        return self.closed

    def shutdown(self) -> Deferred[CloseInfo]:
        """Close cleanly if still open and wait for the end: for ``addCleanup``."""
        if self._close_info is None and self.protocol is not None:
            if self.protocol.state == WebSocketClientProtocol.STATE_OPEN:
                return self.close()
            if self.protocol.state == WebSocketClientProtocol.STATE_CONNECTING:
                return self.abort()
        return self.closed

    def _proto(self) -> _Protocol:
        if self.protocol is None:
            raise RuntimeError("not connected")
        return self.protocol

    def _connected(self, response: ConnectionResponse) -> None:
        self.response = response

    def _opened(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.callback(self)

    def _message(self, payload: bytes, is_binary: bool) -> None:
        if self._readers:
            self._readers.pop(0).callback((payload, is_binary))
        else:
            self._inbox.append((payload, is_binary))

    def _pong(self, payload: bytes) -> None:
        waiter = self._pings.pop(payload, None)
        if waiter is not None:
            waiter.callback(None)

    def _pinged(self) -> None:
        self.pings_answered += 1
        for waiter in [w for w in self._ping_count_waiters if self.pings_answered >= w[0]]:
            self._ping_count_waiters.remove(waiter)
            waiter[1].callback(self.pings_answered)

    def _closed(self, info: CloseInfo, early: Exception) -> None:
        self._close_info = info
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.errback(Failure(early))
        gone = ClientClosed(*info)
        counting = [d for _, d in self._ping_count_waiters]
        for waiter in self._readers + list(self._pings.values()) + counting:
            waiter.errback(Failure(gone))
        self._readers, self._pings, self._ping_count_waiters = [], {}, []
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(info)


def connect_client(
    reactor: Any,
    url: str,
    *,
    origin: str | None = None,
    protocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    max_message_size: int = 0,
    open_handshake_timeout: float = 30,
    context_factory: Any = None,
) -> Deferred[TestClient]:
    """
    Connect and complete the WebSocket handshake.

    :param url: ``ws://127.0.0.1:<port>/<path>``, or ``wss://`` with ``context_factory``.
    :param protocols: subprotocols to offer.
    :param headers: extra handshake request headers.
    :param max_message_size: client receive limit in bytes; 0 (Autobahn's client
        default) is unlimited.
    :param open_handshake_timeout: seconds; Autobahn's default of 5 can trip on a
        loaded CI box while SocketDock waits on a scripted connect answer.
    :param context_factory: for ``wss://``: the client TLS options, e.g.
        ``optionsForClientTLS(u"localhost", trustRoot=...)``.
    :returns: a Deferred firing with a :class:`TestClient` once open, or failing
        with :class:`HandshakeRefused` (non-101 answer), :class:`HandshakeFailed`
        or a connection error.
    """
    client = TestClient()
    factory = _Factory(
        client, url, origin=origin, protocols=protocols, headers=headers, reactor=reactor
    )
    if factory.isSecure and context_factory is None:
        raise ValueError("wss:// needs a context_factory")
    # Autobahn's timers run on txaio's loop, not on ``reactor``: keep autoPing off so
    # no timer outlives a test.
    factory.setProtocolOptions(
        autoPingInterval=0,
        openHandshakeTimeout=open_handshake_timeout,
        maxMessagePayloadSize=max_message_size,
        maxFramePayloadSize=max_message_size,
    )
    opening = client._opening
    assert opening is not None
    endpoint: Any = TCP4ClientEndpoint(reactor, factory.host, factory.port)
    if factory.isSecure:
        endpoint = wrapClientTLS(context_factory, endpoint)
    return endpoint.connect(factory).addCallback(lambda _: opening)
