"""
Forwarder against a holder that answers when the test says (treq's
``StubTreq`` over an in-memory resource, time from a ``task.Clock``).
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from socketdock.cluster.forward import Forwarder
from socketdock.config.secrets import Secrets
from socketdock.relay.confirm import Gone, Tally, Unconfirmed
from socketdock.relay.reach import HERE_ONLY, HOP_HEADER, InvalidTags, Unreachable
from socketdock.relay.registry import NotLive, OutboundFull

HOLDER = "http://b.example:8765"
ID = "0" * 32


class Holder(Resource):
    """Another instance's callback API: keeps each request for the test to answer."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET

    def answer(self, code: int, body: bytes = b"") -> None:
        request = self.requests.pop(0)
        request.setResponseCode(code)
        request.write(body)
        request.finish()


class ForwarderTests(SynchronousTestCase):
    """Requests for a connection another instance holds."""

    def setUp(self) -> None:
        self.holder = Holder()
        self.http = StubTreq(self.holder)
        self.clock = Clock()
        self.secrets = Secrets(api_tokens=("new", "old"))
        self.forwarder = Forwarder(self.http, self.clock, self.secrets, timeout=10.0)

    def answered(self, d, code: int, body: bytes = b""):
        self.holder.answer(code, body)
        self.http.flush()
        return d

    def test_send_says_hop_and_token(self) -> None:
        d = self.forwarder.send(HOLDER, ID, b"hi", False)
        self.http.flush()
        request = self.holder.requests[0]
        self.assertEqual(request.uri, f"/socket/{ID}/send".encode())
        self.assertEqual(request.requestHeaders.getRawHeaders(HOP_HEADER), [b"1"])
        self.assertEqual(request.requestHeaders.getRawHeaders(b"Authorization"), [b"Bearer new"])
        self.assertIsNone(request.requestHeaders.getRawHeaders(HERE_ONLY))
        self.assertIsNone(self.successResultOf(self.answered(d, 200)))

    def test_answers_become_the_holders_failures(self) -> None:
        for code, body, error in [
            (404, b"no such connection", NotLive),
            (400, b"too many tags", InvalidTags),
            (410, b"gone", Gone),
            (504, b"not confirmed", Unconfirmed),
            (503, b"client not reading", OutboundFull),
            (503, b"no link to Redis", Unreachable),
            (500, b"oops", Unreachable),
        ]:
            d = self.forwarder.send(HOLDER, ID, b"hi", True)
            self.http.flush()
            self.failureResultOf(self.answered(d, code, body), error)

    def test_reply_after_the_caller_gave_up(self) -> None:
        """The timeout answers 503; the holder's late answer goes nowhere."""
        d = self.forwarder.send(HOLDER, ID, b"hi", False)
        self.http.flush()
        self.clock.advance(10.0)
        failure = self.failureResultOf(d, Unreachable)
        self.assertIn("did not answer", failure.getErrorMessage())
        self.holder.answer(200)
        self.http.flush()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_caller_hangs_up(self) -> None:
        """The API request went (the backend hung up): the forwarded one is dropped too."""
        d = self.forwarder.describe(HOLDER, ID)
        self.http.flush()
        d.cancel()
        self.failureResultOf(d, Unreachable)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_confirm_waits_longer_than_a_send(self) -> None:
        d = self.forwarder.confirm(HOLDER, ID, b"hi", False, 30.0)
        self.http.flush()
        self.clock.advance(34.0)
        self.assertNoResult(d)
        self.clock.advance(1.0)
        self.failureResultOf(d, Unreachable)

    def test_tag_confirm_here_only_and_none_there(self) -> None:
        d = self.forwarder.tag_confirm(HOLDER, "a/b", b"hi", False, 1.0)
        self.http.flush()
        request = self.holder.requests[0]
        self.assertEqual(request.uri, b"/tags/a%2Fb/send?confirm=1.0")
        self.assertEqual(request.requestHeaders.getRawHeaders(HERE_ONLY), [b"here"])
        self.assertEqual(self.successResultOf(self.answered(d, 404)), Tally())

    def test_tag_confirm_counts(self) -> None:
        d = self.forwarder.tag_confirm(HOLDER, "room", b"hi", False, 1.0)
        self.http.flush()
        body = b'{"confirmed": 2, "unconfirmed": 1, "gone": 0}'
        self.assertEqual(self.successResultOf(self.answered(d, 200, body)), Tally(2, 1, 0))

    def test_tags_and_state_answers(self) -> None:
        d = self.forwarder.change_tags(HOLDER, ID, ["a"], [])
        self.http.flush()
        self.assertEqual(self.successResultOf(self.answered(d, 200, b'{"tags": ["a"]}')), ("a",))
        d = self.forwarder.set_state(HOLDER, ID, '{"x": 1}')
        self.http.flush()
        answer = self.successResultOf(self.answered(d, 200, b'{"state": {"x": 1}}'))
        self.assertEqual(answer, '{"x":1}')

    def test_rotated_token_read_per_request(self) -> None:
        self.secrets.api_tokens = (b"newer",)
        self.forwarder.close(HOLDER, ID, 1000, "bye")
        self.http.flush()
        request = self.holder.requests[0]
        self.assertEqual(request.requestHeaders.getRawHeaders(b"Authorization"), [b"Bearer newer"])
