"""
One POST to the backend, over the process's single pooled treq client.

Everything the hot path needs is built once: the header template, the signer.
The timeout covers the whole exchange, body included, not only the headers.
How a POST is built and read is a :class:`PostPath`: treq's own way here,
faster ones in :mod:`socketdock.tuned.post`, chosen by :mod:`socketdock.tuning`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from http.cookiejar import CookieJar
from typing import Any, TypeVar

import attrs
import treq
from hyperlink import EncodedURL
from OpenSSL import SSL
from service_identity import VerificationError
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredSemaphore, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import Certificate
from twisted.python.failure import Failure
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers

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
    ``v2`` follows: HMAC-SHA256 of ``"<t>.<method> <target>\\n" + body``, which
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


class ResponseTooLong(Exception):
    """The backend's answer was longer than the client accepts."""


class _Semaphore:
    """``DeferredSemaphore`` as a :attr:`PostPath.line`."""

    def __init__(self, size: int) -> None:
        self._semaphore = DeferredSemaphore(size)

    def enter(self) -> Deferred[Any]:
        return self._semaphore.acquire()

    def leave(self) -> None:
        self._semaphore.release()


def _collect(response, limit: int | None = None) -> Deferred[HTTPResult]:
    """The whole body with ``treq.collect``, failing past ``limit`` bytes."""
    parts: list[bytes] = []
    seen = 0

    def part(data: bytes) -> None:
        nonlocal seen
        seen += len(data)
        if limit is not None and seen > limit:
            raise ResponseTooLong("the backend's answer is longer than this client accepts")
        parts.append(data)

    d = treq.collect(response, part)
    return d.addCallback(lambda _: HTTPResult(response.code, response.headers, b"".join(parts)))


@attrs.frozen
class PostPath:
    """
    How :class:`BackendClient` builds and reads a POST.

    :ivar urls: makes one client's ``url -> what treq is given``.
    :ivar body: the body to what treq is given as ``data``.
    :ivar collect: ``(response, limit)`` to an :class:`HTTPResult`, a Failure,
        or a Deferred of it; past ``limit`` bytes it fails.
    :ivar line: ``(size)`` to a line of requests waiting for one of ``size``
        places: its ``enter()`` gives None (a place) or a Deferred of one,
        cancelling which leaves the line; its ``leave()`` gives a place back.
    """

    urls: Callable[[], Callable[[str], Any]]
    body: Callable[[bytes], Any]
    collect: Callable[..., Any]
    line: Callable[[int], Any]


#: treq's own way (the ``tuning = off`` stack).
PLAIN_POST = PostPath(lambda: str, bytes, _collect, _Semaphore)


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
    :param path: how POSTs are built and read (the stack's ``post``).
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
        path: PostPath = PLAIN_POST,
    ) -> None:
        self._http = http
        self._max_body = max_response_body
        self._observe = observe
        self._line = path.line(concurrency)
        self._url = path.urls()
        self._body = path.body
        self._collect = path.collect
        self._clock = clock
        self._timeout = timeout
        if not isinstance(signing_secret, Secrets):
            signing_secret = Secrets(signing_secrets=(signing_secret,) if signing_secret else ())
        self._secrets = signing_secret
        self._targets: dict[str, bytes] = {}
        # Never mutated: treq and the agents below copy before they add.
        self._headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [USER_AGENT],
            }
        )
        self._no_cookies = NoCookies()

    def _target(self, url: str) -> bytes:
        # The request line's target, as both agents send it (URI.originForm).
        target = self._targets.get(url)
        if target is None:
            text = EncodedURL.from_text(url).to_uri().to_text().encode("ascii")
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
            data=self._body(body),
            headers=headers,
            cookies=self._no_cookies,
            allow_redirects=False,
            unbuffered=True,
        )
        d.addCallback(self._collect, self._max_body)
        d.addTimeout(self._timeout, self._clock)
        return d.addBoth(self._done, kind, started)

    def _done(self, outcome: _T, kind: str, started: float) -> _T:
        self._line.leave()
        label = outcome.code if isinstance(outcome, HTTPResult) else "error"
        self._observe(kind, str(label), self._clock.seconds() - started)
        return outcome


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
