"""
An HTTP/1.1 server channel that parses with httptools (llhttp) instead of
twisted.web's line-by-line parser, at about half the CPU per request.

Resources still get real ``twisted.web.server.Request`` objects from the
site's ``requestFactory``, fed through the same calls ``HTTPChannel`` makes
(``gotLength``, ``handleContentChunk``, ``requestReceived``), and the request
line is kept under ``HTTPChannel``'s names until the request is received, so
``api.site.BoundedRequest`` and the WebSocket hand-over keep working.  Everything
else -- timeouts, producers and backpressure, persistence, writing responses,
``100 Continue`` -- is ``HTTPChannel``'s own code, inherited.

llhttp cannot be stopped at the end of a message, so what it parses past the
request being handled is kept as a queue of events and acted on only once that
request is done: pipelined requests are answered in order, and nothing (a 400,
a 413, a ``100 Continue``) is written ahead of an earlier response.  Bytes that
arrive while a request is handled are buffered unparsed, as ``HTTPChannel``
does, and pause the transport past ``_optimisticEagerReadSize``.

llhttp's lenient header mode (kept for control bytes in values, as
``HTTPChannel`` allows them) also lets a blank before the colon through for the
names it knows (``Content-Length :``) and takes obs-fold continuation lines;
the channel refuses both with 400, as RFC 9110 §5.1 and RFC 9112 §5.2 allow.
"""

from __future__ import annotations

import re
from collections import deque
from io import BytesIO

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.iweb import INonQueuedRequestFactory

from socketdock.tuned import CheckFailed, require, require_attributes

_HEAD, _BODY, _DONE, _ERROR = range(4)
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
#: A line that begins with a blank: in a head, obs-fold (RFC 9112 §5.2) or
#: whitespace before the first field line (§2.2).
_BLANK_LINE_START = re.compile(rb"\n[ \t]").search


class _Refused(Exception):
    """A request passed one of the channel's limits: answered 400."""


class FastHTTPChannel(HTTPChannel):
    """
    ``HTTPChannel`` with an llhttp parser; same limits (``maxHeaders``,
    ``totalHeadersSize``) and the same answers (400 and close) as Twisted's.

    A request that asks to upgrade stops HTTP parsing: what follows its
    headers is kept for whoever takes the connection over (see
    :meth:`takeBuffered`); if nobody does, the connection closes after the answer.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parser: HttpRequestParser | None = HttpRequestParser(self)
        # As HTTPChannel: control characters other than NUL, CR and LF are
        # allowed in header values (framing checks stay strict).
        self._parser.set_dangerous_leniencies(lenient_headers=True)
        self._events: deque = deque()
        self._draining = False
        self._closed = False
        # After an upgrade request: the bytes that follow it, never parsed.
        self._unparsed: list[bytes] | None = None
        # The message being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._headSize = 0
        self._inMessage = False
        # Between a message's first byte and the end of its head; and whether
        # the last byte fed was a LF (a fold may start the next read).
        self._inHead = False
        self._afterLF = False
        self._progress = False
        self._stalled = 0
        # The request being received and its request line, under the names
        # HTTPChannel gives them (a request may read them in gotLength).
        self._current: Request | None = None
        self._command = self._path = self._version = b""
        self._host: IAddress | None = None
        self._peer: IAddress | None = None

    def getHost(self):
        # twisted.web asks for every request, and each ask is a getsockname()
        # call; a connection's local address never changes.
        if self._host is None:
            assert self.transport is not None
            self._host = self.transport.getHost()
        return self._host

    def getPeer(self):
        # Asked for every request too; each ask built a new address object.
        if self._peer is None:
            assert self.transport is not None
            self._peer = self.transport.getPeer()
        return self._peer

    # httptools callbacks: record, never act (see the module docstring).

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._headSize = 0
        self._inMessage = self._inHead = self._progress = True

    def on_url(self, part: bytes) -> None:
        self._url += part
        self._headSize += len(part)
        self._progress = True
        if self._headSize > self.totalHeadersSize:
            raise _Refused()

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp checks that a name is a token, but its lenient mode lets a
        # blank before the colon through after the names it knows by heart.
        if b"\x00" in value or b" " in name or b"\t" in name:
            raise _Refused()
        if value and value[-1] in b" \t":
            value = value.rstrip(b" \t")
        self._headers.append((name, value))
        self._headSize += len(name) + len(value) + 2
        self._progress = True
        if len(self._headers) > self.maxHeaders or self._headSize > self.totalHeadersSize:
            raise _Refused()

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:  # HTTP/0.9 has no version; HTTPChannel refuses it
            raise _Refused()
        # Twisted counts the request line as a line of the head too.
        if self._headSize + len(method) + len(version) + 2 > self.totalHeadersSize:
            raise _Refused()
        self._progress = True
        self._inHead = False
        headers, self._headers = self._headers, []  # trailers, if any, are dropped
        self._events.append((_HEAD, (method, self._url, version, headers, parser.should_upgrade())))

    def on_body(self, data: bytes) -> None:
        self._progress = True
        self._events.append((_BODY, data))

    def on_chunk_header(self) -> None:
        self._progress = True

    def on_message_complete(self) -> None:
        self._inMessage = False
        self._progress = True
        self._events.append((_DONE, None))

    # IProtocol

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        if self._closed:
            return
        if self._unparsed is not None:
            self._unparsed.append(data)
            self._bufferedMore(self._unparsed)
        elif self._handlingRequest:
            self._dataBuffer.append(data)
            self._bufferedMore(self._dataBuffer)
        else:
            self._feed(data)
            self._drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._events.clear()
        self._parser = None
        super().connectionLost(reason)

    def loseConnection(self) -> None:
        self._closed = True
        return super().loseConnection()

    def requestDone(self, request) -> None:
        """Called by the first request in the queue when it is done."""
        if request is not self.requests[0]:
            raise TypeError
        del self.requests[0]
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        if not self.persistent:
            self.loseConnection()
            return
        self._handlingRequest = False
        self.resetTimeout()  # the idle time starts once the answer is sent
        self._drain()

    def pauseProducing(self) -> None:
        # The transport's buffer of answers is full.  HTTPChannel pauses
        # reading only between requests, and answers are written while a
        # request is handled: a client pipelining requests it never reads the
        # answers to would be read from without end (issue 21).
        super().pauseProducing()
        if self._handlingRequest:
            self._networkProducer.pauseProducing()

    def timeoutConnection(self) -> None:
        # HTTPChannel cancels and re-creates the idle timer around each request;
        # leaving it armed and ignoring it while a request is answered is the
        # same to the peer and cheaper.
        if self._handlingRequest:
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def takeBuffered(self) -> bytes:
        """
        For whoever takes the connection over after an upgrade request: the
        bytes that followed that request's headers, which were not parsed.
        The channel parses nothing more.
        """
        rest = b"".join(self._unparsed or ())
        self._unparsed = []
        self._closed = True
        self._events.clear()
        self._parser = None
        return rest

    # Parsing and acting on what was parsed.

    def _bufferedMore(self, buffered: list[bytes]) -> None:
        # Backpressure on a peer that keeps sending while we answer.
        if (
            sum(map(len, buffered)) > self._optimisticEagerReadSize
            and not self._waitingForTransport
        ):
            self._networkProducer.pauseProducing()

    def _feed(self, data: bytes) -> None:
        if self._parser is None or not data:
            return
        if self._afterLF and self._inHead and data[:1] in (b" ", b"\t"):
            self._refuse()
            return
        self._afterLF = data[-1] == 10  # a LF
        blank = _BLANK_LINE_START(data)
        if blank is None:  # most reads
            self._feedPart(data)
            return
        # Fed up to each LF that a blank follows, to learn whether that line
        # is in a head (refused) or in a body (any bytes go).
        start = 0
        while True:
            end = len(data) if blank is None else blank.start() + 1
            if not self._feedPart(data[start:end]):
                if self._unparsed is not None and end < len(data):
                    self._unparsed.append(data[end:])
                return
            if blank is None:
                break
            if self._inHead:
                self._refuse()
                return
            start = end
            blank = _BLANK_LINE_START(data, start)

    def _refuse(self) -> None:
        self._events.append((_ERROR, None))
        self._parser = None

    def _feedPart(self, data: bytes) -> bool:
        """Feed ``data``; False once the parser stopped (an error or an upgrade)."""
        parser = self._parser
        if parser is None:
            return False
        self._progress = False
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._unparsed = [data[upgrade.args[0] :]]
            return False
        except HttpParserError:
            self._refuse()
            return False
        # httptools gathers a header's name and value out of our sight until
        # the line ends: bound the bytes fed mid-message with no sign of progress.
        if self._inMessage and not self._progress:
            self._stalled += len(data)
            if self._stalled > self.totalHeadersSize:
                self._refuse()
                return False
        else:
            self._stalled = 0
        return True

    def _drain(self) -> None:
        # Iterative, so a burst of pipelined requests answered synchronously
        # does not recurse through requestDone.
        if self._draining:
            return
        self._draining = True
        events = self._events
        try:
            while not self._handlingRequest and not self._closed:
                if events:
                    kind, value = events.popleft()
                    if kind == _BODY:
                        assert self._current is not None  # a body follows its head
                        self._current.handleContentChunk(value)
                    elif kind == _HEAD:
                        self._head(*value)
                    elif kind == _DONE:
                        self._done()
                    else:
                        self._respondToBadRequestAndDisconnect()
                elif self._dataBuffer and self._unparsed is None:
                    data = b"".join(self._dataBuffer)
                    self._dataBuffer = []
                    self._feed(data)
                else:
                    break
        finally:
            self._draining = False

    def _head(
        self,
        method: bytes,
        url: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        upgrade: bool,
    ) -> None:
        factory = self.requestFactory
        if INonQueuedRequestFactory.providedBy(factory):
            request = factory(self)
        else:
            request = factory(self, len(self.requests))
        self.requests.append(request)
        add = request.requestHeaders.addRawHeader
        length: int | None = 0
        connection = expect = None
        cookies = False
        # One pass for what HTTPChannel looks up header by header afterwards.
        for name, value in headers:
            add(name, value)
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                if value.lower() != b"chunked":  # as HTTPChannel: nothing else
                    self._respondToBadRequestAndDisconnect()
                    return
                length = None
            elif lowered == b"connection":
                connection = value if connection is None else connection
            elif lowered == b"expect":
                expect = value if expect is None else expect
            elif lowered == b"cookie":
                cookies = True
        if cookies:
            request.parseCookies()
        # HTTPChannel.checkPersistence, from the values gathered above.
        if version != b"HTTP/1.1":
            self.persistent = False
        elif connection is not None and b"close" in connection.lower().split(b" "):
            self.persistent = False
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        elif upgrade:
            # Nobody may take the connection over; it is not HTTP any more.
            self.persistent = False
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        else:
            self.persistent = True
        self._current = request
        self._command, self._path, self._version = method, url, version
        request.gotLength(length)
        if (
            expect is not None
            and version == b"HTTP/1.1"
            and not self._closed
            and expect.lower() == b"100-continue"
            # gotLength may have answered already and dropped the header
            and request.requestHeaders.hasHeader(b"expect")
        ):
            self._send100Continue()

    def _done(self) -> None:
        request, self._current = self._current, None
        assert request is not None  # the end follows its head
        self._handlingRequest = True
        request.requestReceived(self._command, self._path, self._version)


#: What :class:`FastHTTPChannel` reads, calls or sets of ``HTTPChannel``'s own.
_CHANNEL_INTERNALS = (
    "_handlingRequest",
    "_dataBuffer",
    "_networkProducer",
    "_waitingForTransport",
    "_optimisticEagerReadSize",
    "_respondToBadRequestAndDisconnect",
    "_send100Continue",
    "requests",
    "maxHeaders",
    "totalHeadersSize",
    "persistent",
    "timeOut",
    "setTimeout",
    "resetTimeout",
    "requestDone",
    "timeoutConnection",
)

#: Pipelined requests both channels must hand over alike.
_PIPELINED = (
    b"GET /a?b=c&d HTTP/1.1\r\nHost: h\r\nX-Twice: 1\r\nX-Twice: 2\r\n\r\n"
    b"POST /socket/x/send HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\nhello"
    b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"HEAD /h HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\nConnection: close\r\n\r\n"
)


def _recording_request(seen: list) -> type[Request]:
    class Recorded(Request):
        def gotLength(self, length: int | None) -> None:
            self.content = BytesIO()  # never a temporary file, even for a chunked body

        def process(self) -> None:
            assert self.content is not None
            seen.append(
                (
                    self.method,
                    self.uri,
                    self.clientproto,
                    sorted(self.requestHeaders.getAllRawHeaders()),
                    self.content.read(),
                    dict(self.received_cookies),
                )
            )
            self.setResponseCode(200)
            self.write(b"ok")
            self.finish()

    return Recorded


def _hand_over(channel_type: type[HTTPChannel], chunk: int) -> tuple[list, bool]:
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    seen: list = []
    channel = channel_type()
    channel.requestFactory = _recording_request(seen)
    channel.callLater = Clock().callLater  # type: ignore[assignment]  # its timeout, never run
    transport = StringTransport()
    channel.makeConnection(transport)
    for i in range(0, len(_PIPELINED), chunk):
        channel.dataReceived(_PIPELINED[i : i + chunk])
    answers = transport.value().count(b"HTTP/1.1 200 OK\r\n")
    channel.connectionLost(Failure(ConnectionDone()))
    return seen, answers == len(seen) and transport.disconnecting


def check_channel() -> None:
    """
    :class:`FastHTTPChannel` holds where ``HTTPChannel`` still has the
    internals it inherits and sets, and both channels hand the same
    pipelined requests to the site's request factory, whole or byte by byte.
    """
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    connected = HTTPChannel()
    connected.callLater = Clock().callLater  # type: ignore[assignment]  # its timeout, never run
    connected.makeConnection(StringTransport())
    try:
        require_attributes(connected, _CHANNEL_INTERNALS, "twisted.web.http.HTTPChannel")
    finally:
        connected.connectionLost(Failure(ConnectionDone()))
    require(
        hasattr(HttpRequestParser, "set_dangerous_leniencies"),
        "httptools' parser has no set_dangerous_leniencies (httptools < 0.6.3)",
    )
    plain, plain_closed = _hand_over(HTTPChannel, len(_PIPELINED))
    require(
        len(plain) == 4 and plain_closed, "twisted.web's own channel parsed the probe otherwise"
    )
    for chunk in (len(_PIPELINED), 1, 7):
        fast, closed = _hand_over(FastHTTPChannel, chunk)
        if fast != plain or not closed:
            raise CheckFailed(
                f"the httptools channel hands over other requests than twisted.web's ({chunk}-byte reads)"
            )
