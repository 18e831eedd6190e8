"""
One persistent HTTP/1.1 client connection, parsed with ``httptools``.

One request at a time (no pipelining), and no ``Expect: 100-continue``: the
body goes out right after the head.  The response is read whole, up to a
byte cap, before its Deferred fires: the relay reads every body anyway, the
cap bounds the memory, and a cancel (treq's timeout) then always lands on a
Deferred this connection owns, which aborts the connection instead of leaving
it half-read.  Errors are Twisted's own (``ResponseNeverReceived``,
``ResponseFailed``, ``RequestTransmissionFailed``) so callers see what the
stock ``Agent`` would give them.
"""

from __future__ import annotations

from collections.abc import Callable

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from socketdock.tuned.h1message import BodyConsumer, RequestInfo, Response

# We write these ourselves from the request line and the body producer.
_OURS = frozenset([b"host", b"content-length", b"transfer-encoding"])
_VERSIONS = {"1.1": (b"HTTP", 1, 1), "1.0": (b"HTTP", 1, 0)}
MAX_HEAD = 64 * 1024


def _chunked(codings: list[bytes] | None) -> bool:
    # Chunked framing only when chunked is the last transfer-coding (RFC 9112 6.3).
    return bool(codings and codings[-1].rsplit(b",", 1)[-1].strip().lower() == b"chunked")


class ResponseTooLarge(Exception):
    """The response head or body is larger than this client accepts."""


class HTTP11Connection(Protocol):
    """
    A keep-alive connection to one origin.

    :param on_idle: called with this connection when it may take another request.
    :param on_gone: called with this connection once it is closed.
    :param max_body: the largest response body accepted, in bytes.
    """

    transport: ITCPTransport  # TCP or TLS, connected before the pool hands it out

    def __init__(self, on_idle: Callable, on_gone: Callable, max_body: int) -> None:
        self._on_idle = on_idle
        self._on_gone = on_gone
        self._max_body = max_body
        self.connected = False
        self.idle_since = 0.0
        self._waiters: list[Deferred] = []
        self._d: Deferred | None = None
        self._consumer: BodyConsumer | None = None
        self._producer = None
        self._registered = False

    # --- the request ----------------------------------------------------

    def request(
        self,
        method: bytes,
        target: bytes,
        host: bytes | None,
        uri: bytes,
        headers: Headers,
        producer,
    ) -> Deferred[Response]:
        """Send one request; fires with the whole response."""
        d: Deferred[Response] = Deferred(self._cancel)
        self._d = d
        self._info = RequestInfo(method, uri, headers)
        self._parser = httptools.HttpResponseParser(self)
        self._got_bytes = False
        self._head_size = 0
        self._headers: dict[bytes, list[bytes]] = {}
        self._phrase = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._framed = True
        self._complete = False
        self._sent = producer is None
        self._error: BaseException | None = None

        lines = []
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in _OURS:
                if lower != b"host":
                    continue
                host = None  # the caller's Host wins, as with twisted's Agent
            for value in values:
                lines.append(b"%b: %b\r\n" % (name, value))
        if producer is None:
            if method in (b"POST", b"PUT"):
                lines.append(b"Content-Length: 0\r\n")
        elif producer.length == UNKNOWN_LENGTH:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            lines.append(b"Content-Length: %d\r\n" % (producer.length,))
        start = b"%b %b HTTP/1.1\r\n" % (method, target)
        if host is not None:
            start += b"Host: " + host + b"\r\n"
        head = start + b"".join(lines) + b"\r\n"
        if producer is None:
            self.transport.write(head)
        else:
            self._write_body(producer, head)
        return d

    def _write_body(self, producer, head: bytes) -> None:
        self._producer = producer
        self._consumer = consumer = BodyConsumer(self.transport, producer.length, head)
        try:
            produced = producer.startProducing(consumer)
        except BaseException:
            self._body_failed(Failure(), consumer)
            return
        if not produced.called:
            # Only a producer that is still at work needs the transport's
            # pause/resume; one that wrote everything is done already.
            consumer.flush()
            self.transport.registerProducer(producer, True)  # type: ignore[attr-defined]  # TCP and TLS transports are IConsumers
            self._registered = True
        produced.addCallbacks(
            self._body_done, self._body_failed, callbackArgs=(consumer,), errbackArgs=(consumer,)
        )

    def _body_done(self, _, consumer: BodyConsumer) -> None:
        if consumer is not self._consumer:
            return  # a request this connection already gave up on
        try:
            consumer.finish()
        except ValueError:
            self._body_failed(Failure(), consumer)
            return
        self._end_body()
        self._sent = True

    def _body_failed(self, failure: Failure, consumer: BodyConsumer) -> None:
        if consumer is not self._consumer:
            return
        self._end_body()
        self._fail(RequestTransmissionFailed([failure]))

    def _end_body(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()  # type: ignore[attr-defined]  # as in _write_body
        self._producer = self._consumer = None

    def _stop_body(self) -> None:
        producer = self._producer
        if producer is not None:
            self._end_body()
            producer.stopProducing()

    def _cancel(self, d: Deferred) -> None:
        self._d = None
        self._stop_body()
        self.transport.abortConnection()

    def _fail(self, error: Exception) -> None:
        d, self._d = self._d, None
        self._stop_body()
        self.transport.abortConnection()
        if d is not None:
            d.errback(Failure(error))

    # --- the response (httptools callbacks) -----------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._d is None:
            # Bytes nobody asked for (or after a cancel): the stream can no
            # longer be trusted to line up with requests.
            self.transport.abortConnection()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except Exception as e:
            if not self._complete:
                self._fail(ResponseFailed([Failure(self._error or e)]))
                return
            if self._info.method != b"HEAD":
                # Bytes after a whole response: it stands, the stream is suspect.
                self._keep_alive = False
        if self._complete:
            # A server may answer before it has read the whole body (413, say):
            # stop sending; the connection cannot be reused.
            self._stop_body()
            self._finish()

    def on_message_begin(self) -> None:
        if self._complete:
            raise ValueError("bytes after the end of the response")

    def on_status(self, phrase: bytes) -> None:
        self._phrase += phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            self._error = ResponseTooLarge(f"response head over {MAX_HEAD} bytes")
            raise self._error
        self._headers.setdefault(name.lower(), []).append(value)

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        headers = self._headers
        if code < 200 or code in (204, 304):
            return
        if self._info.method == b"HEAD":
            # httptools cannot be told that no body follows: stop it here.
            self._keep_alive = self._parser.should_keep_alive()
            self._complete = True
            raise StopIteration
        lengths = headers.get(b"content-length")
        if lengths is not None:
            if int(lengths[0]) > self._max_body:
                self._error = ResponseTooLarge(f"response body over {self._max_body} bytes")
                raise self._error
        elif not _chunked(headers.get(b"transfer-encoding")):
            self._framed = False  # read until the server closes

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._max_body:
            self._error = ResponseTooLarge(f"response body over {self._max_body} bytes")
            raise self._error
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers = {}
            self._phrase = b""
            self._head_size = 0
            return
        # Asked now: llhttp forgets once the callback returns.
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True

    def _response(self, complete: bool) -> Response:
        parser = self._parser
        return Response(
            _VERSIONS.get(parser.get_http_version()) or (b"HTTP", 1, 1),
            parser.get_status_code(),
            self._phrase,
            Headers(self._headers),
            b"".join(self._body),
            self._info,
            complete,
        )

    def _finish(self) -> None:
        response = self._response(True)
        reusable = self._framed and self._sent and self._keep_alive
        d, self._d = self._d, None
        # Let go of the finished response's parser; the next request makes one.
        self._parser = None  # type: ignore[assignment]
        if reusable:
            self._on_idle(self)
        else:
            self.transport.loseConnection()
        assert d is not None  # a response completes a request
        d.callback(response)

    # --- the connection -------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self._on_gone(self)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        d, self._d = self._d, None
        if d is None:
            return
        sending = self._producer is not None
        self._stop_body()
        if not self._framed and not sending and self._error is None:
            d.callback(self._response(False))  # the close was the end of the body
        elif not self._got_bytes:
            d.errback((RequestTransmissionFailed if sending else ResponseNeverReceived)([reason]))
        else:
            d.errback(ResponseFailed([reason]))

    def when_closed(self) -> Deferred[None]:
        """Fires once this connection is closed."""
        d: Deferred[None] = Deferred()
        if self.connected:
            self._waiters.append(d)
        else:
            d.callback(None)
        return d
