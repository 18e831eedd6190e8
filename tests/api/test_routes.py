"""
socketdock/api/routes.py: the one failure-to-status table, and how a
Deferred becomes an answer (at once when it has fired, later otherwise, never
to a client that left).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from socketdock.api.routes import Leaf, answer, failed
from socketdock.relay.confirm import Gone, Unconfirmed
from socketdock.relay.listing import BadCursor
from socketdock.relay.reach import InvalidTags, Unreachable
from socketdock.relay.registry import BudgetFull, NotLive, OutboundFull
from socketdock.relay.state import InvalidState


def _request() -> Any:
    """A stand-in Request that records what is written and set."""
    request: Any = DummyRequest([b"x"])
    request.path = b"/socket/x"
    return request


def _ok(request, result) -> bytes:
    return b"ok " + repr(result).encode()


class FailedTests(SynchronousTestCase):
    def test_table(self) -> None:
        """Each failure a reach may fire with: its status, Retry-After and one-line reason."""
        table = [
            (NotLive(), 404, None, b"no such live connection\n"),
            (OutboundFull(), 503, b"1", b"client is not reading; retry later\n"),
            (BudgetFull(), 503, b"1", b"server has too much data queued; retry later\n"),
            (InvalidTags("too many tags"), 400, None, b"too many tags\n"),
            (
                BadCursor("cursor is not one this API gave"),
                400,
                None,
                b"cursor is not one this API gave\n",
            ),
            (
                InvalidState("state larger than 8 bytes", 413),
                413,
                None,
                b"state larger than 8 bytes\n",
            ),
            (Unreachable("no link", retry_after=7), 503, b"7", b"no link\n"),
            (
                Unconfirmed(),
                504,
                None,
                b"the client did not confirm in time; it may not have read it\n",
            ),
            (Gone(), 410, None, b"the connection closed before its client confirmed\n"),
        ]
        for error, code, retry_after, body in table:
            request = _request()
            self.assertEqual(failed(request, Failure(error)), body, error)
            self.assertEqual(request.responseCode, code, error)
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"retry-after"), retry_after and [retry_after]
            )
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"content-type"),
                [b"text/plain; charset=utf-8"],
            )

    def test_anything_else_is_a_logged_500(self) -> None:
        request = _request()
        self.assertEqual(
            failed(request, Failure(KeyError("bug"))), b"internal error; see the log\n"
        )
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class AnswerTests(SynchronousTestCase):
    def test_fired_is_answered_at_once(self) -> None:
        """An already-fired Deferred is rendered in the same call, success or failure."""
        request = _request()
        self.assertEqual(answer(request, succeed(3), _ok), b"ok 3")
        request = _request()
        self.assertEqual(answer(request, fail(NotLive()), _ok), b"no such live connection\n")
        self.assertEqual(request.responseCode, 404)

    def test_later(self) -> None:
        """Not fired yet: NOT_DONE_YET, then written and finished when it fires."""
        request = _request()
        d: Deferred = Deferred()
        self.assertEqual(answer(request, d, _ok), NOT_DONE_YET)
        self.assertEqual(request.written, [])
        d.errback(OutboundFull())
        self.assertEqual(request.written, [b"client is not reading; retry later\n"])
        self.assertEqual((request.responseCode, request.finished), (503, 1))

    def test_client_gone_meanwhile(self) -> None:
        """The client hung up first: nothing is written, and the failure is not left unhandled."""
        request = _request()
        d: Deferred = Deferred()
        answer(request, d, _ok)
        request.processingFailed(Failure(ConnectionError("gone")))
        d.errback(NotLive())
        self.assertEqual(request.written, [])
        self.assertEqual(self.flushLoggedErrors(NotLive), [])


class LeafTests(SynchronousTestCase):
    def test_body_limit_for_post_only(self) -> None:
        """A POST reads up to the limit, the class's or the one given; no other method reads any."""

        class Small(Leaf):
            limit = 10

        post, get = _request(), _request()
        post.method, get.method = b"POST", b"GET"
        self.assertEqual(Small(succeed).body_limit(post), 10)
        self.assertEqual(Small(succeed, 99).body_limit(post), 99)
        self.assertEqual(Small(succeed, 99).body_limit(get), 0)
        self.assertEqual(Leaf(succeed).body_limit(post), 0)
