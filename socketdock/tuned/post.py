"""
The relay's backend POSTs built and read with less work per request than
treq does (together ~150 lines, several percent of a relayed round trip):

- :class:`PreparedURL`: treq re-encodes every URL it is given (IDNA,
  percent-encoding), ~50 µs; this one is encoded once per URL.
- :class:`BytesProducer`: treq wraps a bytes body in a ``FileBodyProducer``
  over ``BytesIO``, a cooperator and a ``callLater`` per request; this one
  writes it in one go, and can be replayed on a fresh connection by
  :class:`socketdock.tuned.fastagent.FastAgent`.
- :func:`reader`: ``treq.collect``'s extra Deferred and ``Failure.check``
  walks, skipped; a buffered body is the result itself.
- :class:`Line`: requests waiting for a place without a Deferred for those
  that find one free (``DeferredSemaphore`` chains one per request).

:mod:`socketdock.tuning` hands them to
:class:`socketdock.relay.httpclient.BackendClient` as its ``PostPath`` when
the ``agent`` piece runs; :func:`check_post` is that piece's check of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

from hyperlink import EncodedURL
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from socketdock.tuned import require

_R = TypeVar("_R")


class Line:
    """
    At most ``size`` holders at once; the rest wait, first come, first
    served.  Unlike ``DeferredSemaphore`` a free place costs no Deferred: the
    common case, and a chained Deferred per request was ~1% of a round trip.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: deque[Deferred[None]] = deque()

    def enter(self) -> Deferred[None] | None:
        """None if a place was free (it is now taken), else a Deferred that
        fires with the place; cancelling it leaves the line."""
        if self._free and not self._waiting:
            self._free -= 1
            return None
        d: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(d)
        return d

    def leave(self) -> None:
        """Give a place back, to the first in line if anyone waits."""
        if self._waiting:
            self._waiting.popleft().callback(None)
        else:
            self._free += 1


@implementer(IBodyProducer)
class BytesProducer:
    """
    A body already in memory, written in one go: treq's default for bytes is
    a ``FileBodyProducer`` over ``BytesIO``, which goes through a cooperator
    and a ``callLater`` per request.  The transport buffers what it cannot
    send yet; the body is at most ``max_message_size`` plus the envelope.
    """

    # An agent may send it again on a fresh connection (the tuned one does).
    replayable = True

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class PreparedURL(EncodedURL):
    """
    A URL already in its encoded (URI) form: treq re-encodes every URL it is
    given (IDNA, percent-encoding) on every call, ~50 µs; this one answers
    ``to_uri`` with itself and remembers its text.
    """

    _text = None

    @classmethod
    def prepare(cls, url: str) -> PreparedURL:
        """Encode ``url`` once, the way treq would on every call."""
        # hyperlink types from_text as returning URL, though it builds a cls.
        return cls.from_text(EncodedURL.from_text(url).to_uri().to_text())  # type: ignore[return-value]

    def to_uri(self) -> PreparedURL:
        return self

    def to_text(self, with_password: bool = False) -> str:
        if with_password:
            return super().to_text(with_password)
        if self._text is None:
            self._text = super().to_text()
        return self._text


def reader(result: Callable[[int, Headers, bytes], _R], too_long: type[Exception]):
    """
    ``collect(response, limit)`` to ``result(code, headers, body)``: the
    result itself when the body has ended, a Failure, or a Deferred of the
    result; an answer longer than ``limit`` fails with ``too_long``.
    """

    def collect(response, limit: int | None = None) -> _R | Failure | Deferred[_R]:
        collector = _BodyCollector(response, limit, result, too_long)
        response.deliverBody(collector)
        return collector.outcome()

    return collect


class _BodyCollector(Protocol):
    """
    The whole body, then the result.  What ``treq.content`` does, minus its
    extra Deferred and its ``Failure.check`` walks (together ~3% of a relayed
    round trip); like it, a body ended by the connection closing
    (``PotentialDataLoss``) counts as complete.  Our agent buffers responses,
    so the body is usually all there at once and no Deferred is needed.
    """

    def __init__(self, response, limit, result, too_long) -> None:
        self._response = response
        self._left = limit
        self._make = result
        self._too_long_error = too_long
        self._parts: list[bytes] = []
        self._result: Any = None
        self._waiting: Deferred[Any] | None = None

    def outcome(self) -> Any:
        """The result if the body has ended, else a Deferred of it."""
        if self._result is not None:
            return self._result
        self._waiting = Deferred()
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                self._left = None
                self._parts = []
                self._too_long = True
                # deliverBody's protocol gets the body's IPushProducer as its transport.
                producer = cast(IPushProducer, self.transport)
                producer.stopProducing()  # the agent drops the connection
                return
        if not self._too_long:
            self._parts.append(data)

    _too_long = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._too_long:
            result: Any = Failure(
                self._too_long_error("the backend's answer is longer than this client accepts")
            )
        elif isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            response = self._response
            result = self._make(response.code, response.headers, b"".join(self._parts))
        else:
            result = reason
        if self._waiting is None:
            self._result = result
        elif isinstance(result, Failure):
            self._waiting.errback(result)
        else:
            self._waiting.callback(result)


class URLCache:
    """Each URL text, prepared once: a relay posts to two or three fixed URLs."""

    def __init__(self) -> None:
        self._urls: dict[str, PreparedURL] = {}

    def __call__(self, url: str) -> PreparedURL:
        prepared = self._urls.get(url)
        if prepared is None:
            prepared = self._urls[url] = PreparedURL.prepare(url)
        return prepared


class _Consumer:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Answer:
    """A response whose body is delivered at once, in two parts."""

    code = 200

    def __init__(self) -> None:
        self.headers = Headers({b"X-A": [b"1"]})
        self.length = 2

    def deliverBody(self, protocol) -> None:
        protocol.makeConnection(None)
        protocol.dataReceived(b"o")
        protocol.dataReceived(b"k")
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IAgent)
class _RecordingAgent:
    """Keeps what treq asked of it, body included, and answers nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        consumer = _Consumer()
        if bodyProducer is not None:
            bodyProducer.startProducing(consumer)
        raw = sorted(headers.getAllRawHeaders()) if headers is not None else []
        self.calls.append((method, uri, raw, b"".join(consumer.written)))
        return Deferred()


def check_post() -> None:
    """
    The shortcuts give what treq would: the same request to the agent below
    (method, target, headers) for a prepared URL and a one-write body as for
    the text and the bytes, with the body written at once; the same body read as ``treq.collect``
    reads; and a line that lets in as many as it has places.
    """
    import treq
    from treq.client import HTTPClient

    url = "http://h\u00e9.example:8/a b?c=\u00e9"
    agent = _RecordingAgent()
    client = HTTPClient(agent)
    headers = Headers({b"Content-Type": [b"application/json"]})
    for target, body in ((url, b"{}"), (URLCache()(url), BytesProducer(b"{}"))):
        d = client.post(target, data=body, headers=headers, allow_redirects=False, unbuffered=True)
        d.addErrback(lambda _: None)
        d.cancel()
    require(len(agent.calls) == 2, "treq did not send both requests")
    # treq's own producer writes later, through its cooperator: compare the rest.
    plain, prepared = agent.calls
    require(plain[:3] == prepared[:3], "treq sends a prepared URL differently")
    require(prepared[3] == b"{}", "treq does not pass a BytesProducer's body through")
    got = reader(lambda code, headers, body: (code, body), ValueError)(_Answer(), 10)
    parts: list[bytes] = []
    answer: Any = _Answer()  # an IResponse for what collect reads of one
    treq.collect(answer, parts.append)
    require(got == (200, b"".join(parts)), "the body read differs from treq.collect's")
    line = Line(1)
    require(line.enter() is None and line.enter() is not None, "Line lets in too many")
