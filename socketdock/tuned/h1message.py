"""
The two halves of an exchange that are not the connection: the request body
going out (:class:`BodyConsumer`) and the whole response coming back
(:class:`Response`), for :mod:`socketdock.tuned.h1client`.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IClientRequest, IResponse
from zope.interface import implementer


@implementer(IClientRequest)
class RequestInfo:
    """What ``IResponse.request`` describes: the request that was sent."""

    __slots__ = ("absoluteURI", "headers", "method")

    def __init__(self, method: bytes, uri: bytes, headers: Headers) -> None:
        self.method = method
        self.absoluteURI = uri
        self.headers = headers


@implementer(IPushProducer)
class _Finished:
    """The transport handed to a body protocol: the body is already here."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass


@implementer(IResponse)
class Response:
    """A whole response; ``deliverBody`` hands over the body and ends at once."""

    previousResponse: IResponse | None = None

    def __init__(
        self,
        version,
        code: int,
        phrase: bytes,
        headers: Headers,
        body: bytes,
        request: RequestInfo,
        complete: bool,
    ) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = len(body)
        self.request = request
        self._body = body
        self._complete = complete
        self._delivered = False

    def deliverBody(self, protocol) -> None:
        """Body then ``ResponseDone`` (``PotentialDataLoss`` when the close ended it)."""
        if self._delivered:
            raise RuntimeError("the response body was already delivered")
        self._delivered = True
        body, self._body = self._body, b""
        protocol.makeConnection(_Finished())
        if body:
            protocol.dataReceived(body)
        protocol.connectionLost(Failure(ResponseDone() if self._complete else PotentialDataLoss()))

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


class BodyConsumer:
    """
    Writes the request body, framed by length or by chunks.  Until
    :meth:`flush` it gathers what it is given behind the request head, so a
    producer that writes everything at once costs a single transport write.
    """

    def __init__(self, transport, length, head: bytes) -> None:
        self._transport = transport
        self._chunked = length == UNKNOWN_LENGTH
        # Read only when not chunked.
        self._left: int = 0 if self._chunked else length
        self._pending: list[bytes] | None = [head]

    def write(self, data: bytes) -> None:
        if self._chunked:
            if not data:
                return
            data = b"%x\r\n%b\r\n" % (len(data), data)
        else:
            self._left -= len(data)
            if self._left < 0:
                raise ValueError("the body producer wrote more than its length")
        if self._pending is not None:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write what was gathered; from now on every write goes straight out."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._transport.write(b"".join(pending))

    def finish(self) -> None:
        """The producer is done: end the chunks, or check that the length was met."""
        if self._chunked:
            self.write_raw(b"0\r\n\r\n")
        elif self._left:
            raise ValueError("the body producer wrote less than its length")
        self.flush()

    def write_raw(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def registerProducer(self, producer, streaming: bool) -> None:
        self._transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._transport.unregisterProducer()
