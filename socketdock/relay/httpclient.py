"""
One POST to the backend, over the process's single pooled treq client.

Everything the hot path needs is built once: the header template, the signer.
The timeout covers the whole exchange, body included, not only the headers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Sequence
from http.cookiejar import CookieJar
from typing import TypeVar, cast

import attrs
from hyperlink import EncodedURL
from OpenSSL import SSL
from service_identity import VerificationError
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate
from twisted.python.failure import Failure
from twisted.web.client import URI, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from socketdock import __version__
from socketdock.config.secrets import Secrets

_T = TypeVar("_T")

USER_AGENT = f"SocketDock/{__version__}".encode("ascii")


@attrs.frozen
class HTTPResult:
    """A complete answer from the backend: status, headers and body."""

    code: int
    headers: Headers
    body: bytes


def sign(
    secret: bytes | Sequence[bytes],
    timestamp: int,
    body: bytes,
    target: bytes | None = None,
    method: bytes = b"POST",
) -> bytes:
    """
    The ``X-SocketDock-Signature`` value (SPEC §3): ``v1`` is HMAC-SHA256 of
    ``"<t>." + body``, so a backend can check the sender and refuse replays.
    With the request ``target`` (its path and query, as on the request line),
    ``v2`` follows: HMAC-SHA256 of ``"<t>.<method> <target>\n" + body``, which
    binds the body to its route, so a backend that checks it refuses a
    captured message replayed to ``disconnecturi``.  ``v1`` stays as it was
    for backends that know only it.

    :param secret: one secret, or several during a rotation: one ``v1=`` (and
        ``v2=``) each, in order, so a backend that knows any one of them verifies.
    """
    t = str(timestamp).encode("ascii")
    secrets = (secret,) if isinstance(secret, bytes) else secret
    value = b"t=" + t
    for key in secrets:
        value += b",v1=" + hmac.new(key, t + b"." + body, hashlib.sha256).hexdigest().encode(
            "ascii"
        )
    if target is None:
        return value
    head = t + b"." + method + b" " + target + b"\n"
    for key in secrets:
        value += b",v2=" + hmac.new(key, head + body, hashlib.sha256).hexdigest().encode("ascii")
    return value


class NoCookies(CookieJar):
    """
    A cookie jar that keeps nothing: a backend does not get to set state in
    the relay, and an empty jar still costs a cookie-policy walk per request.
    """

    def add_cookie_header(self, request) -> None:
        pass

    def extract_cookies(self, response, request) -> None:
        pass

    def set_cookie(self, cookie) -> None:
        pass


class BackendClient:
    """
    POSTs JSON bodies to the backend and collects the whole answer.

    :param http: a treq ``HTTPClient`` (in tests, ``StubTreq``).
    :param clock: for the timeout.
    :param timeout: seconds for one whole exchange.
    :param signing_secret: when set, every request is signed: one secret, or
        the :class:`Secrets` in force, read per request (a SIGHUP changes them).
    :param concurrency: requests in flight at once.  Ten thousand clients
        closing together would otherwise open ten thousand connections to the
        backend at once, run the process out of file descriptors and lose
        notices to connection errors; past this many, requests wait in line
        (first come, first served) and reuse the pooled connections.
    :param observe: told ``(kind, outcome, seconds)`` of every attempt, timed
        from when it leaves the line (``outcome`` is the status code as text,
        or ``error``), so the latency it reports is the backend's alone.
    :param max_response_body: a longer answer fails the attempt (whatever
        agent is below; the tuned one stops even earlier), or None.
    """

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        timeout: float,
        signing_secret: str | Secrets | None = None,
        concurrency: int = 128,
        observe: Callable[[str, str, float], None] = lambda kind, outcome, seconds: None,
        max_response_body: int | None = None,
    ) -> None:
        self._http = http
        self._max_body = max_response_body
        self._observe = observe
        self._line = _Line(concurrency)
        self._clock = clock
        self._timeout = timeout
        if not isinstance(signing_secret, Secrets):
            signing_secret = Secrets(signing_secrets=(signing_secret,) if signing_secret else ())
        self._secrets = signing_secret
        self._urls: dict[str, EncodedURL] = {}
        self._targets: dict[str, bytes] = {}
        # Never mutated: treq and the agents below copy before they add.
        self._headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [USER_AGENT],
            }
        )
        self._no_cookies = NoCookies()

    def _url(self, url: str) -> EncodedURL:
        # A relay posts to two or three fixed URLs: parse and encode each once.
        prepared = self._urls.get(url)
        if prepared is None:
            prepared = self._urls[url] = PreparedURL.prepare(url)
        return prepared

    def _target(self, url: str) -> bytes:
        # The request line's target, as both agents send it (URI.originForm).
        target = self._targets.get(url)
        if target is None:
            text = self._url(url).to_text().encode("ascii")
            target = self._targets[url] = URI.fromBytes(text).originForm
        return target

    def post(self, url: str, body: bytes, kind: str = "request") -> Deferred[HTTPResult]:
        """
        One attempt, once a slot is free: fails on connection errors and on
        timeout (the timeout starts when the request does, not in the line).
        Cancelling it while it waits for a slot just leaves the line.

        :param kind: what the request is (connect, message, disconnect), for
            ``observe``.
        """
        waiting = self._line.enter()
        if waiting is None:
            return self._attempt(None, url, body, kind)
        return waiting.addCallback(self._attempt, url, body, kind)

    def _attempt(self, _: object, url: str, body: bytes, kind: str) -> Deferred[HTTPResult]:
        try:
            return self._send(url, body, kind)
        except BaseException:
            self._line.leave()
            return fail()

    def _send(self, url: str, body: bytes, kind: str) -> Deferred[HTTPResult]:
        started = self._clock.seconds()
        headers = self._headers
        keys = self._secrets.signing_keys
        if keys:
            headers = headers.copy()
            headers.setRawHeaders(
                b"X-SocketDock-Signature",
                [sign(keys, int(self._clock.seconds()), body, self._target(url))],
            )
        d = self._http.post(
            self._url(url),
            data=BytesProducer(body),
            headers=headers,
            cookies=self._no_cookies,
            allow_redirects=False,
            unbuffered=True,
        )
        d.addCallback(_collect, self._max_body)
        d.addTimeout(self._timeout, self._clock)
        return d.addBoth(self._done, kind, started)

    def _done(self, outcome: _T, kind: str, started: float) -> _T:
        self._line.leave()
        label = outcome.code if isinstance(outcome, HTTPResult) else "error"
        self._observe(kind, str(label), self._clock.seconds() - started)
        return outcome


class _Line:
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


class ResponseTooLong(Exception):
    """The backend's answer was longer than the client accepts."""


def _collect(response, limit: int | None = None) -> HTTPResult | Failure | Deferred[HTTPResult]:
    collector = _BodyCollector(response, limit)
    response.deliverBody(collector)
    return collector.outcome()


class _BodyCollector(Protocol):
    """
    The whole body, then the result.  What ``treq.content`` does, minus its
    extra Deferred and its ``Failure.check`` walks (together ~3% of a relayed
    round trip); like it, a body ended by the connection closing
    (``PotentialDataLoss``) counts as complete.  Our agent buffers responses,
    so the body is usually all there at once and no Deferred is needed.
    """

    def __init__(self, response, limit: int | None = None) -> None:
        self._response = response
        self._left = limit
        self._parts: list[bytes] = []
        self._result: HTTPResult | Failure | None = None
        self._waiting: Deferred[HTTPResult] | None = None

    def outcome(self) -> HTTPResult | Failure | Deferred[HTTPResult]:
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
            result: HTTPResult | Failure = Failure(
                ResponseTooLong("the backend's answer is longer than this client accepts")
            )
        elif isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            response = self._response
            result = HTTPResult(response.code, response.headers, b"".join(self._parts))
        else:
            result = reason
        if self._waiting is None:
            self._result = result
        elif isinstance(result, Failure):
            self._waiting.errback(result)
        else:
            self._waiting.callback(result)


def make_tls_policy(ca_path: str | None) -> BrowserLikePolicyForHTTPS:
    """
    How https backends are verified: against the system trust store, or only
    against the private CA in ``ca_path``; the hostname is always checked
    (service-identity).
    """
    if ca_path is None:
        return BrowserLikePolicyForHTTPS()
    with open(ca_path, "rb") as f:
        return BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))


def describe_failure(failure: Failure) -> str:
    """
    A short, log-safe reason for a failed attempt: the exception's name, or
    for a refused https certificate what was wrong with it, so that an
    operator sees "certificate verify failed" rather than
    "RequestTransmissionFailed".
    """
    for reason in getattr(failure.value, "reasons", None) or [failure]:
        value = reason.value
        if isinstance(value, VerificationError):
            return "TLS: the backend's certificate does not match its hostname"
        if isinstance(value, SSL.Error):
            return "TLS: " + _openssl_reason(value)
    assert failure.type is not None  # a Failure always has its exception's type
    return failure.type.__name__


def _openssl_reason(error: SSL.Error) -> str:
    # pyOpenSSL packs [(library, function, reason), ...] into args[0].
    details = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [entry[-1] for entry in details if isinstance(entry, tuple) and entry]
    return ", ".join(str(r) for r in reasons) or "handshake failed"
