"""
The tuned POST path's parts: a URL encoded once, a body written in one go,
a body read without treq's Deferreds, a line without a Deferred per place.
"""

from hyperlink import EncodedURL
from twisted.python.failure import Failure
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from socketdock.relay.httpclient import HTTPResult, ResponseTooLong
from socketdock.tuned.post import BytesProducer, Line, PreparedURL, URLCache, check_post, reader

_collect = reader(HTTPResult, ResponseTooLong)


class PreparedURLTests(SynchronousTestCase):
    def test_encoded_once_like_treq(self):
        """A prepared URL is what treq's per-call encoding would produce, and stays as is."""
        text = "http://bücher.example:8080/ä b?x=ü"
        prepared = PreparedURL.prepare(text)
        expected = EncodedURL.from_text(text).to_uri().to_text()
        self.assertEqual(prepared.to_text(), expected)
        self.assertIs(prepared.to_uri(), prepared)
        self.assertEqual(prepared.to_uri().to_text(), expected)

    def test_cached_per_text(self):
        cache = URLCache()
        self.assertIs(cache("http://a.example/x"), cache("http://a.example/x"))


class BytesProducerTests(SynchronousTestCase):
    def test_writes_everything_at_once(self):
        """The body is announced by length and written in one call; the Deferred has fired."""
        consumer = StringTransport()
        producer = BytesProducer(b"abc")
        self.assertEqual(producer.length, 3)
        d = producer.startProducing(consumer)
        self.assertEqual(consumer.value(), b"abc")
        self.assertIsNone(self.successResultOf(d))


class _Answer:
    length = 0

    """An IResponse stand-in that delivers its body now or when told."""

    code = 200

    def __init__(self, parts, reason, later=False):
        self.headers = Headers()
        self._parts, self._reason, self._later = parts, reason, later
        self.deliver = None

    def deliverBody(self, protocol):
        def go():
            for part in self._parts:
                protocol.dataReceived(part)
            protocol.connectionLost(self._reason)

        if self._later:
            self.deliver = go
        else:
            go()


class CollectTests(SynchronousTestCase):
    """How a backend answer's body becomes an HTTPResult."""

    def collect(self, *args, **kwargs):
        answer = _Answer(*args, **kwargs)
        return answer, _collect(answer)

    def test_a_body_read_at_once_is_the_result_itself(self) -> None:
        """A buffered body needs no Deferred; the parts are joined in order."""
        _, result = self.collect([b"a", b"b"], Failure(ResponseDone()))
        self.assertEqual((result.code, result.body), (200, b"ab"))

    def test_a_body_ended_by_close_counts_as_complete(self) -> None:
        """PotentialDataLoss (no length, the server closed) is a complete body, as in treq.content."""
        answer, d = self.collect([b"x"], Failure(PotentialDataLoss()), later=True)
        self.assertNoResult(d)
        answer.deliver()
        self.assertEqual(self.successResultOf(d).body, b"x")

    def test_past_the_limit_fails(self) -> None:
        """Past the limit the body is dropped (the agent drops the connection)."""
        answer = _Answer([b"abc", b"def"], Failure(ResponseDone()))
        stopped = StringTransport()
        deliver = answer.deliverBody
        answer.deliverBody = lambda p: (p.makeConnection(stopped), deliver(p))  # type: ignore[method-assign]
        result = _collect(answer, 4)
        self.assertEqual(stopped.producerState, "stopped")
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(ResponseTooLong))

    def test_a_body_cut_short_is_a_failure(self) -> None:
        """Any other end of the body fails the request, now or later."""
        _, now = self.collect([b"x"], Failure(ResponseFailed([])))
        self.assertIsInstance(now, Failure)
        self.assertTrue(now.check(ResponseFailed))
        answer, later = self.collect([], Failure(ResponseFailed([])), later=True)
        answer.deliver()
        self.failureResultOf(later, ResponseFailed)


class LineTests(SynchronousTestCase):
    def test_places_then_first_come_first_served(self) -> None:
        line = Line(1)
        self.assertIsNone(line.enter())
        second, third = line.enter(), line.enter()
        assert second is not None and third is not None
        line.leave()
        self.assertIsNone(self.successResultOf(second))
        self.assertNoResult(third)


class CheckTests(SynchronousTestCase):
    def test_passes_here(self) -> None:
        check_post()
