"""
The backend client on both stacks (no cookies, shared headers, signatures)
against a real twisted.web server on loopback, and its backend_concurrency
line on both stacks' :class:`PostPath`.  The tuned path's own parts are
tested in ``tests/tuned/test_post.py``.
"""

import hashlib
import hmac
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from socketdock.relay.httpclient import (
    BackendClient,
    ResponseTooLong,
    make_tls_policy,
    sign,
)
from socketdock.tuning import PLAIN, TUNED, make_http_client


class SignTests(SynchronousTestCase):
    def test_v1_unchanged(self):
        """Without a target the value is v1 alone, byte for byte as before v2."""
        mac = hmac.new(b"k", b"1700000000." + b"{}", hashlib.sha256).hexdigest()
        self.assertEqual(sign(b"k", 1700000000, b"{}"), b"t=1700000000,v1=" + mac.encode())

    def test_v2_follows_v1(self):
        """v2 signs "<t>.POST <target>\\n" + body; v1 is unchanged in front of it."""
        v1 = sign(b"k", 1700000000, b"{}")
        v2 = hmac.new(b"k", b"1700000000.POST /message\n{}", hashlib.sha256).hexdigest()
        self.assertEqual(sign(b"k", 1700000000, b"{}", b"/message"), v1 + b",v2=" + v2.encode())
        self.assertNotEqual(
            sign(b"k", 1700000000, b"{}", b"/disconnect"),
            sign(b"k", 1700000000, b"{}", b"/message"),
        )


class _Recorder(Resource):
    """Remembers each request's body, headers and client port; sets a cookie."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, Headers, int]] = []
        #: Each request's target, as its request line had it.
        self.targets: list[bytes] = []

    def render_POST(self, request):
        body = request.content.read()
        self.seen.append((body, request.requestHeaders, request.getClientAddress().port))
        self.targets.append(request.uri)
        request.addCookie(b"session", b"backend-state")
        request.setHeader(b"content-type", b"text/plain")
        if body.startswith(b"long:"):
            return b"y" * int(body[5:])
        return b"answer:" + str(len(self.seen)).encode("ascii")


class BackendClientTests(TestCase):
    """Over the tuned stack's agent and pool."""

    stack = TUNED
    #: What an answer past max_response_body fails with: the tuned agent stops it first.
    too_long: type = ResponseFailed

    def setUp(self):
        self.resource = _Recorder()
        port = reactor.listenTCP(0, Site(self.resource), interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted's Site/ServerFactory generics disagree
        self.addCleanup(port.stopListening)
        host: Any = port.getHost()  # a TCP port's host is an IPv4Address
        self.url = f"http://127.0.0.1:{host.port}/message"
        pool = self.stack.make_pool(reactor, 4)
        self.addCleanup(pool.closeCachedConnections)
        http = make_http_client(self.stack, reactor, pool, make_tls_policy(None), 100_000)
        self.client = BackendClient(
            http,
            reactor,
            10,
            signing_secret="s3cret",
            max_response_body=100_000,
            path=self.stack.post,
        )

    @inlineCallbacks
    def test_answer_at_most_the_bound_arrives(self):
        """An answer of exactly max_response_body bytes is the result."""
        result = yield self.client.post(self.url, b"long:100000")
        self.assertEqual(len(result.body), 100_000)

    def test_longer_answer_fails_the_attempt(self):
        """An answer past max_response_body fails the attempt instead of growing without bound."""
        return self.assertFailure(self.client.post(self.url, b"long:300000"), self.too_long)

    @inlineCallbacks
    def test_posts_reuse_one_connection_without_cookies(self):
        """Two POSTs share one connection, carry body and headers, and never send a cookie back."""
        first = yield self.client.post(self.url, b'{"n":1}')
        second = yield self.client.post(self.url, b'{"n":2}')
        self.assertEqual((first.code, first.body), (200, b"answer:1"))
        self.assertEqual(second.body, b"answer:2")
        (body1, _headers1, port1), (body2, headers2, port2) = self.resource.seen
        self.assertEqual((body1, body2), (b'{"n":1}', b'{"n":2}'))
        self.assertEqual(port1, port2)
        self.assertEqual(headers2.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(headers2.getRawHeaders(b"content-length"), [b"7"])
        self.assertTrue(
            (headers2.getRawHeaders(b"x-socketdock-signature") or [b""])[0].startswith(b"t=")
        )
        self.assertIsNone(headers2.getRawHeaders(b"cookie"))

    @inlineCallbacks
    def test_large_body_arrives_whole(self):
        """A 1 MiB body written in one go reaches the server intact."""
        body = b"x" * (1 << 20)
        result = yield self.client.post(self.url, body)
        self.assertEqual(result.code, 200)
        self.assertEqual(self.resource.seen[0][0], body)

    @inlineCallbacks
    def test_signature_binds_the_route(self):
        """v1 as before; v2 over the method and the target the backend received, then the body."""
        url = self.url + "?a=1&b=%20&c=\u00e9"
        yield self.client.post(url, b'{"n":1}')
        (_, headers, _), target = self.resource.seen[-1], self.resource.targets[-1]
        (value,) = headers.getRawHeaders(b"x-socketdock-signature") or []
        t = value.split(b",")[0][2:]
        v1 = hmac.new(b"s3cret", t + b'.{"n":1}', hashlib.sha256).hexdigest().encode()
        v2 = hmac.new(b"s3cret", t + b".POST " + target + b'\n{"n":1}', hashlib.sha256)
        self.assertEqual(value, b"t=" + t + b",v1=" + v1 + b",v2=" + v2.hexdigest().encode())
        self.assertTrue(target.startswith(b"/message?a=1&b=%20&c=%C3%A9"), target)


class PlainBackendClientTests(BackendClientTests):
    """The same over twisted.web's Agent and HTTPConnectionPool (tuning = off)."""

    stack = PLAIN
    # The plain agent does not bound bodies itself: BackendClient does.
    too_long = ResponseTooLong


class ConcurrencyTests(SynchronousTestCase):
    """BackendClient keeps at most ``concurrency`` requests in flight (plain line)."""

    path = PLAIN.post

    def make(self, concurrency):
        self.started: list[str] = []
        self.answers: list[Deferred[object]] = []

        class Http:
            def post(inner, url, **kwargs):
                d: Deferred[object] = Deferred()
                self.started.append(url if isinstance(url, str) else url.to_text())
                self.answers.append(d)
                return d

        clock = Clock()
        self.observed: list[tuple[object, ...]] = []
        http: Any = Http()  # a test double with only post()
        return clock, BackendClient(
            http,
            clock,
            10,
            concurrency=concurrency,
            observe=lambda *seen: self.observed.append(seen),
            path=self.path,
        )

    def test_excess_requests_wait_in_line(self) -> None:
        """With two slots the third request starts only when one finishes, in order."""
        _clock, client = self.make(2)
        results = [client.post(f"http://b/{n}", b"{}") for n in range(3)]
        self.assertEqual(self.started, ["http://b/0", "http://b/1"])
        self.answers[0].errback(ConnectionRefusedError())
        self.failureResultOf(results[0], ConnectionRefusedError)
        self.assertEqual(len(self.started), 3)
        self.assertEqual(self.started[2], "http://b/2")

    def test_timeout_starts_with_the_request(self) -> None:
        """Time spent waiting for a slot does not count against backend_timeout."""
        clock, client = self.make(1)
        first = client.post("http://b/0", b"{}")
        second = client.post("http://b/1", b"{}")
        clock.advance(9)
        self.answers[0].errback(ConnectionRefusedError())
        self.failureResultOf(first)
        clock.advance(9)
        self.assertNoResult(second)
        clock.advance(1)
        self.failureResultOf(second)

    def test_cancel_while_waiting_leaves_the_line(self) -> None:
        """A request cancelled before it started never starts and frees nothing twice."""
        _clock, client = self.make(1)
        first = client.post("http://b/0", b"{}")
        second = client.post("http://b/1", b"{}")
        second.cancel()
        self.failureResultOf(second)
        self.answers[0].errback(ConnectionRefusedError())
        self.failureResultOf(first)
        third = client.post("http://b/2", b"{}")
        self.assertEqual(len(self.started), 2)
        self.assertNoResult(third)

    def test_a_request_that_raises_gives_its_place_back(self) -> None:
        """An attempt that fails before it is sent is a failed result, and the next request still runs."""

        class Broken:
            def post(inner, url, **kwargs):
                raise ValueError("bad URL")

        client = BackendClient(Broken(), Clock(), 10, concurrency=1)  # type: ignore[arg-type]  # a test double with only post()
        self.failureResultOf(client.post("http://b/0", b"{}"), ValueError)
        self.failureResultOf(client.post("http://b/1", b"{}"), ValueError)

    def test_latency_is_timed_from_leaving_the_line(self) -> None:
        """The observed seconds of an attempt exclude its wait for a slot."""
        clock, client = self.make(1)
        first = client.post("http://b/0", b"{}", "message")
        second = client.post("http://b/1", b"{}", "disconnect")
        clock.advance(9)
        self.answers[0].errback(ConnectionRefusedError())
        self.failureResultOf(first)
        clock.advance(1)
        self.answers[1].errback(ConnectionRefusedError())
        self.failureResultOf(second)
        self.assertEqual(self.observed, [("message", "error", 9.0), ("disconnect", "error", 1.0)])


class TunedConcurrencyTests(ConcurrencyTests):
    """The same over the tuned path's line."""

    path = TUNED.post


class SeveralSecretsTests(SynchronousTestCase):
    def test_one_v1_per_secret_in_order(self):
        """Several signing secrets: one v1= each, the first first, each a valid HMAC of t.body."""
        import hashlib
        import hmac

        from socketdock.relay.httpclient import sign

        header = sign([b"new", b"old"], 1700000000, b"{}")
        t, first, second = header.split(b",")
        self.assertEqual(t, b"t=1700000000")
        for value, secret in ((first, b"new"), (second, b"old")):
            mac = hmac.new(secret, b"1700000000.{}", hashlib.sha256).hexdigest().encode()
            self.assertEqual(value, b"v1=" + mac)
        self.assertEqual(sign(b"new", 1700000000, b"{}"), t + b"," + first)
