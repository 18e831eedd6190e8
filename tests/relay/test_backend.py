"""
Tests for socketdock.relay.backend: how the HTTP backend judges each answer (SPEC
§5), on a Clock with a scripted stand-in for the one-attempt client.
"""

import email.utils
import json
import os
import time
from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import (
    ConnectRefused,
    HTTPBackend,
    MessageRefused,
    Reply,
    UnusableAdmission,
    retry_after,
)
from socketdock.relay.httpclient import HTTPResult
from socketdock.relay.retry import MAX_RETRY_AFTER, Backoff, RetriesExhausted
from socketdock.relay.wire import CallbackURLs

CID = "0" * 32
NOW = 1_700_000_000.0


def answer(code, body=b"OK", **headers):
    """An HTTPResult; keyword names become headers (underscores as dashes)."""
    h = Headers()
    for name, value in headers.items():
        h.addRawHeader(name.replace("_", "-").encode(), value.encode())
    return HTTPResult(code, h, body)


REFUSED = object()


class ScriptedClient:
    """Answers each POST from a script, recording when and what was sent."""

    def __init__(self, clock, script):
        self.clock = clock
        self.script = list(script)
        self.sent = []

    def post(self, url, body, kind="request"):
        self.sent.append((self.clock.seconds(), url, json.loads(body)))
        outcome = self.script.pop(0)
        if outcome is REFUSED:
            return fail(ConnectionRefusedError())
        return succeed(outcome)


class _BackendFixture:
    """An HTTPBackend on a Clock over a ScriptedClient."""

    def backend(self, script, retries=2, inline_reply=False, connecturi=None):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.client = ScriptedClient(self.clock, script)
        self.metrics = Metrics(active=lambda: 0, queued=lambda: 0)
        client: Any = self.client  # a scripted BackendClient double
        return HTTPBackend(
            client,
            self.clock,
            CallbackURLs("http://sd"),
            self.metrics,
            messageuri="http://b/message",
            connecturi=connecturi,
            disconnecturi="http://b/disconnect",
            backoff=Backoff(retries),
            inline_reply=inline_reply,
        )

    def run_out(self, seconds=60.0, step=0.05):
        """Let every retry wait pass (bounded)."""
        for _ in range(int(seconds / step)):
            self.clock.advance(step)


class HTTPBackendTests(_BackendFixture, SynchronousTestCase):
    def test_retryable_answers_then_success(self):
        """Refused, 500, 408 and 429 are retried with the same seq and body until a 2xx."""
        backend = self.backend(
            [REFUSED, answer(500), answer(408), answer(429), answer(204)], retries=4
        )
        d = backend.message(CID, 7, b"hi", False)
        self.run_out()
        self.assertIsNone(self.successResultOf(d))
        bodies = [body for _, _, body in self.client.sent]
        self.assertEqual(len(bodies), 5)
        self.assertTrue(all(b == bodies[0] for b in bodies))
        self.assertEqual(bodies[0]["meta"]["seq"], 7)
        self.assertEqual(self.metrics.status()["backend"], {"failures": 0, "retries": 4})

    def test_other_4xx_and_3xx_are_final(self):
        """400, 404 and 302 refuse the message at once, counted as one failure each."""
        for code in (400, 404, 302):
            backend = self.backend([answer(code)])
            failure = self.failureResultOf(backend.message(CID, 1, b"x", False), MessageRefused)
            self.assertEqual(failure.value.status, code)
            self.assertEqual(len(self.client.sent), 1)
            self.assertEqual(self.metrics.status()["backend"], {"failures": 1, "retries": 0})

    def test_retries_run_out(self):
        """After backend_retries further attempts the message fails with RetriesExhausted."""
        backend = self.backend([answer(503)] * 3, retries=2)
        d = backend.message(CID, 1, b"x", False)
        self.run_out()
        failure = self.failureResultOf(d, RetriesExhausted)
        self.assertEqual(failure.value.attempts, 3)
        self.assertEqual(failure.value.why, "HTTP 503")

    def test_retry_after_seconds_is_honoured(self):
        """A 503 with Retry-After: 3 is retried no sooner than 3 s later."""
        backend = self.backend([answer(503, retry_after="3"), answer(200)])
        d = backend.message(CID, 1, b"x", False)
        self.clock.advance(2.9)
        self.assertEqual(len(self.client.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.client.sent), 2)
        self.successResultOf(d)

    def test_retry_after_http_date_is_honoured(self):
        """A 429 with Retry-After as an HTTP date 5 s ahead is retried 5 s later."""
        when = email.utils.formatdate(NOW + 5, usegmt=True)
        backend = self.backend([answer(429, retry_after=when), answer(200)])
        d = backend.message(CID, 1, b"x", False)
        self.clock.advance(4.9)
        self.assertEqual(len(self.client.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.client.sent), 2)
        self.successResultOf(d)

    def test_inline_reply_text_binary_and_empty(self):
        """With inline_reply a 2xx body is a reply: text/* as text, other types binary, empty none."""
        backend = self.backend(
            [
                answer(200, b"hello", content_type="text/plain; charset=utf-8"),
                answer(200, b"{}", content_type="application/json"),
                answer(200, b""),
            ],
            inline_reply=True,
        )
        self.assertEqual(
            self.successResultOf(backend.message(CID, 1, b"x", False)), Reply(b"hello", False)
        )
        self.assertEqual(
            self.successResultOf(backend.message(CID, 2, b"x", False)), Reply(b"{}", True)
        )
        self.assertIsNone(self.successResultOf(backend.message(CID, 3, b"x", False)))

    def test_body_ignored_without_inline_reply(self):
        """Without inline_reply the old backends' "OK" body is not sent to the client."""
        backend = self.backend([answer(200, b"OK", content_type="text/plain")])
        self.assertIsNone(self.successResultOf(backend.message(CID, 1, b"x", False)))

    def test_connect_judges(self):
        """connect: 403 refuses with 403, 302 with 503 at once, exhausted retries with 503."""
        cases = [([answer(403)], 403, 1), ([answer(302)], 503, 1), ([answer(502)] * 3, 503, 3)]
        for script, status, attempts in cases:
            backend = self.backend(script, connecturi="http://b/connect")
            d = backend.connect(CID, {}, [])
            self.run_out()
            self.assertEqual(self.failureResultOf(d, ConnectRefused).value.status, status)
            self.assertEqual(len(self.client.sent), attempts)

    def test_connect_subprotocol_only_if_offered(self):
        """The backend's Sec-WebSocket-Protocol is chosen only when the client offered it."""
        picked = answer(200, sec_websocket_protocol="didcomm/v2")
        backend = self.backend([picked, picked], connecturi="http://b/connect")
        self.assertEqual(
            self.successResultOf(backend.connect(CID, {}, ["didcomm/v2"])).subprotocol, "didcomm/v2"
        )
        self.assertIsNone(self.successResultOf(backend.connect(CID, {}, ["other"])).subprotocol)

    def test_connect_answer_tags(self):
        """A JSON {"tags": [...]} connect answer tags the connection, de-duplicated, in order."""
        tagged = answer(
            200, b'{"tags": ["b", "a", "b"]}', content_type="application/json; charset=utf-8"
        )
        backend = self.backend([tagged], connecturi="http://b/connect")
        self.assertEqual(self.successResultOf(backend.connect(CID, {}, [])).tags, ("b", "a"))

    def test_other_connect_answers_give_no_tags(self):
        """OK, tags without the JSON type, other JSON and unparsable JSON give no tags."""
        answers = [
            answer(200),
            answer(200, b'{"tags": ["a"]}', content_type="text/plain"),
            answer(200, b'"OK"', content_type="application/json"),
            answer(200, b'{"other": 1}', content_type="application/json"),
            answer(200, b'{"tags": [', content_type="application/json"),
            answer(204, b"", content_type="application/json"),
        ]
        backend = self.backend(answers, connecturi="http://b/connect")
        for _ in answers:
            self.assertEqual(self.successResultOf(backend.connect(CID, {}, [])).tags, ())

    def test_unusable_connect_tags_refuse_with_503(self):
        """Tags against the rules refuse the handshake with 503 once (no retry), logged."""
        bad = [
            b'{"tags": "a"}',
            b'{"tags": [""]}',
            b'{"tags": ["a\\u0000"]}',
            b'{"tags": [%s]}' % b",".join(b'"%d"' % i for i in range(65)),
        ]
        backend = self.backend(
            [answer(200, body, content_type="application/json") for body in bad],
            connecturi="http://b/connect",
        )
        for _ in bad:
            failure = self.failureResultOf(backend.connect(CID, {}, []), UnusableAdmission)
            self.assertEqual(failure.value.status, 503)
        self.assertEqual(len(self.client.sent), len(bad))

    def test_message_and_notice_carry_tags(self):
        """Tags given to message and disconnect appear in meta."""
        backend = self.backend([answer(200), answer(200)])
        backend.message(CID, 1, b"hi", False, tags=("t",))
        backend.disconnect(CID, 1000, "", "client", tags=("t", "u"))
        self.assertEqual(
            [sent[2]["meta"]["tags"] for sent in self.client.sent], [["t"], ["t", "u"]]
        )

    def test_notice_retried_past_backend_retries(self):
        """A disconnect notice goes on being retried after backend_retries, then is delivered."""
        backend = self.backend([REFUSED] * 8 + [answer(503), answer(200)], retries=1)
        d = backend.disconnect(CID, 1000, "", "client")
        self.run_out(seconds=120)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.client.sent), 10)

    def test_notice_4xx_is_not_retried(self):
        """A notice answered 400 was heard: it is not sent again."""
        backend = self.backend([answer(400)])
        self.assertIsNone(self.successResultOf(backend.disconnect(CID, None, "", "client")))
        self.assertEqual(len(self.client.sent), 1)


def headers(value):
    h = Headers()
    h.addRawHeader(b"Retry-After", value.encode())
    return h


class RetryAfterTests(SynchronousTestCase):
    def test_seconds(self):
        """delta-seconds are read as they are."""
        self.assertEqual(retry_after(headers("120"), NOW), 120.0)

    def test_http_date(self):
        """An IMF-fixdate is read as the seconds until then."""
        when = email.utils.formatdate(NOW + 30, usegmt=True)
        self.assertEqual(retry_after(headers(when), NOW), 30.0)

    def in_zone(self, tz):
        """Run the rest of the test with the process in local time zone ``tz``."""
        old = os.environ.get("TZ")
        os.environ["TZ"] = tz
        time.tzset()

        def restore():
            if old is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)

    def test_obsolete_date_formats(self):
        """The RFC 850 and asctime forms HTTP also allows are read as GMT, whatever the local zone."""
        self.in_zone("EST+05")
        self.assertEqual(retry_after(headers("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777.0), 0.0)
        self.assertEqual(retry_after(headers("Sun Nov  6 08:49:37 1994"), 784111770.0), 7.0)

    def test_past_date_is_zero(self):
        """A date already past asks for no wait at all."""
        when = email.utils.formatdate(NOW - 30, usegmt=True)
        self.assertEqual(retry_after(headers(when), NOW), 0.0)

    def test_absent_or_unreadable(self):
        """No header, garbage or a negative number mean no Retry-After."""
        self.assertIsNone(retry_after(Headers(), NOW))
        for value in ("soon", "-5", "1.5e3", ""):
            self.assertIsNone(retry_after(headers(value), NOW), value)

    def test_huge_value_is_capped_by_the_retry_loop(self):
        """A Retry-After of a day is read, and the retry loop caps the wait it imposes."""
        self.assertEqual(retry_after(headers("86400"), NOW), 86400.0)
        self.assertEqual(MAX_RETRY_AFTER, 60.0)


class AuthFailureTests(_BackendFixture, SynchronousTestCase):
    """A backend's 401 or 403 is counted and logged as an authentication failure, once a minute."""

    def auth_refused(self, kind):
        return self.metrics.registry.get_sample_value(
            "socketdock_backend_auth_refused_total", {"kind": kind}
        )

    def test_logged_once_a_minute_per_kind_and_status(self):
        """Three 401s on messages and a 403 on a notice: two warn lines, every one counted."""
        from twisted.logger import capturedLogs

        backend = self.backend([answer(401)] * 3 + [answer(403), answer(401)])
        with capturedLogs() as events:
            for seq in (1, 2, 3):
                self.failureResultOf(backend.message(CID, seq, b"x", False), MessageRefused)
            self.successResultOf(backend.disconnect(CID, 1000, "", "client"))
            self.clock.advance(61)
            self.failureResultOf(backend.message(CID, 4, b"x", False), MessageRefused)
        self.assertEqual(self.auth_refused("message"), 4)
        self.assertEqual(self.auth_refused("disconnect"), 1)
        warned = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(
            [(e["kind"], e["status"], e["held_back"]) for e in warned],
            [("message", 401, 0), ("disconnect", 403, 0), ("message", 401, 2)],
        )
        self.assertIn("authentication failure", warned[0]["log_format"])

    def test_connect_401_is_an_authentication_failure_too(self):
        """A 401 on the connect notice still refuses the handshake with 401, and is logged as such."""
        from twisted.logger import capturedLogs

        backend = self.backend([answer(401)], connecturi="http://b/connect")
        with capturedLogs() as events:
            failure = self.failureResultOf(backend.connect(CID, {}, []), ConnectRefused)
        self.assertEqual(failure.value.status, 401)
        self.assertEqual(self.auth_refused("connect"), 1)
        self.assertEqual([e["kind"] for e in events if e["log_level"].name == "warn"], ["connect"])
