"""
Request bodies are refused, dropped or kept by the route they are for, decided
on the request line and headers: a stranger cannot make a listener buffer a
body it will refuse.  Run against both HTTP channels the site may use: the
tuned httptools one and twisted.web's own.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel

from socketdock.api.site import QuietSite, Root
from tests.api.test_web import _ANY_BODIES, BODY_ROUTES, LIVE, TOKEN, Front, Upgrade

MB4 = 4 * 1024 * 1024
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"


class _PlainSite(QuietSite):
    """The same site on twisted.web's own HTTPChannel (the plain stack)."""

    protocol = HTTPChannel  # type: ignore[assignment]  # the plain stack on purpose


if TYPE_CHECKING:
    # The test case this mixin is combined with.
    from twisted.trial.unittest import SynchronousTestCase as _RefusalsBase
else:
    _RefusalsBase = object


class _Refusals(_RefusalsBase):
    """Tests shared by both channels; ``site_class`` picks the channel."""

    site_class: type = QuietSite

    def setUp(self) -> None:
        self.front = Front(token=TOKEN, max_message_size=MB4)
        self.temp_files = 0
        real = tempfile.TemporaryFile

        def counting(*args, **kwargs):
            self.temp_files += 1
            return real(*args, **kwargs)

        self.patch(tempfile, "TemporaryFile", counting)

    def connect(self, root, max_body: int | None = MB4):
        site = self.site_class(root, Clock(), max_body)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def public(self):
        """The WebSocket listener when api_listen is set: no API behind it."""
        return self.connect(Root(("/ws", Upgrade()), None, self.front.health, None))

    def api(self, max_body: int | None = MB4):
        """The api_listen listener, with the token."""
        return self.connect(Root(None, self.front.api, self.front.health, TOKEN), max_body)

    def buffered(self, channel) -> int:
        return sum(r.content.tell() for r in channel.requests if getattr(r, "content", None))

    def assert_answered_early(self, channel, transport, status: bytes) -> bytes:
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200])
        self.assertEqual(answer.count(b"HTTP/1.1 "), 1, answer[:200])
        self.assertNotIn(b"100 Continue", answer)
        self.assertEqual(len(answer.split(b"\r\n\r\n", 1)[1].splitlines()), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.buffered(channel), 0)
        return answer

    def test_unknown_path_on_public_listener(self) -> None:
        """A POST to an API path on the public listener gets 404 on its headers; no body is read."""
        channel, transport = self.public()
        channel.dataReceived(
            b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % MB4 + b"x" * 65536
        )
        self.assert_answered_early(channel, transport, b"404")
        self.assertEqual(self.temp_files, 0)

    def test_no_token_gets_401_not_413(self) -> None:
        """Without the token, a body over every limit gets 401: the size limit is not revealed."""
        for length in (b"1000000000", b"100"):
            channel, transport = self.api()
            channel.dataReceived(
                b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: " + length + b"\r\n\r\n" + b"x" * 50
            )
            answer = self.assert_answered_early(channel, transport, b"401")
            self.assertIn(b'\r\nWWW-Authenticate: Bearer realm="socketdock"\r\n', answer)
        self.assertEqual(self.front.connection.delivered, [])

    def test_chunked_body_without_token(self) -> None:
        """A chunked body without the token is refused on its headers too."""
        channel, transport = self.api()
        channel.dataReceived(
            b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
        )
        self.assert_answered_early(channel, transport, b"401")
        self.assertEqual(self.temp_files, 0)

    def test_wrong_method_gets_405_at_once(self) -> None:
        """With the token, a body to a route that does not take the method gets 405 and Allow at once."""
        channel, transport = self.api()
        channel.dataReceived(
            b"POST /status HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 200000\r\n\r\nxx"
        )
        answer = self.assert_answered_early(channel, transport, b"405")
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", answer)

    def test_over_the_route_limit(self) -> None:
        """With the token, a declared body past the route's own limit gets 413 at once."""
        channel, transport = self.api()
        channel.dataReceived(
            b"DELETE /socket/"
            + LIVE.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + AUTH
            + b"Content-Length: 5000\r\n\r\n{"
        )
        answer = self.assert_answered_early(channel, transport, b"413")
        self.assertTrue(answer.endswith(b"\r\n\r\nbody larger than 4096 bytes\n"), answer)
        self.assertEqual(self.front.connection.closed, [])

    def test_body_of_a_route_that_reads_none_is_dropped(self) -> None:
        """A body sent with GET /healthz is dropped as it arrives; the answer is the usual one."""
        channel, transport = self.public()
        channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        for _ in range(3):
            channel.dataReceived(b"y" * 100_000)
            self.assertEqual(self.buffered(channel), 0)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        self.assertTrue(answer.endswith(b"\r\n\r\nOK\n"), answer[-50:])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.temp_files, 0)

    def test_bodies_kept_in_memory(self) -> None:
        """With the token, a chunked body and a declared one past 100 kB reach send with no temporary file."""
        channel, transport = self.api()
        channel.dataReceived(
            b"POST /socket/"
            + LIVE.encode()
            + b"/send HTTP/1.1\r\nHost: x\r\n"
            + AUTH
            + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        channel.dataReceived(
            b"POST /socket/"
            + LIVE.encode()
            + b"/send HTTP/1.1\r\nHost: x\r\n"
            + AUTH
            + b"Content-Length: 150000\r\n\r\n"
            + b"z" * 150_000
        )
        self.assertEqual(transport.value().count(b"\r\n\r\nOK"), 2, transport.value()[-300:])
        self.assertEqual(
            self.front.connection.delivered, [(b"hello", True), (b"z" * 150_000, True)]
        )
        self.assertEqual(self.temp_files, 0)

    def test_held_requests_stress(self) -> None:
        """400 held requests declaring 4 MB with 64 KiB sent each: every one refused on its
        headers, nothing buffered, no temporary file."""
        partial = b"x" * 65536
        held = []
        for i in range(400):
            public = i % 2 == 0
            channel, transport = self.public() if public else self.api()
            path = b"/socket/" + LIVE.encode() + (b"/send" if i % 4 < 2 else b"/disconnect")
            channel.dataReceived(
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n" % MB4 + partial
            )
            channel.dataReceived(partial)  # what a peer may still send before it sees the answer
            held.append((channel, transport, b"404" if public else b"401"))
        for channel, transport, status in held:
            self.assert_answered_early(channel, transport, status)
        self.assertEqual(sum(self.buffered(channel) for channel, _, _ in held), 0)
        self.assertEqual(self.temp_files, 0)
        self.assertEqual(self.front.connection.delivered, [])
        self.assertEqual(self.front.connection.closed, [])

    # Run once per channel class below; each run builds its own channels.
    @settings(
        max_examples=100, deadline=None, suppress_health_check=[HealthCheck.differing_executors]
    )
    @given(
        route=st.sampled_from(BODY_ROUTES),
        body=_ANY_BODIES,
        chunked=st.booleans(),
        token=st.sampled_from([TOKEN, "wrong"]),
    )
    def test_any_body_through_the_channel(self, route, body, chunked, token) -> None:
        """Any body, declared or chunked, with or without the token: one answer under 500, one line."""
        method, path = route
        channel, transport = self.api()
        head = (
            method.encode() + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
        )
        if chunked:
            framed = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
            channel.dataReceived(head + b"Transfer-Encoding: chunked\r\n\r\n" + framed)
        else:
            channel.dataReceived(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = transport.value()
        status = int(answer[9:12])
        self.assertLess(status, 500, answer[:200])
        self.assertEqual(answer.count(b"HTTP/1.1 "), 1, answer[:200])
        if token != TOKEN:
            self.assertEqual(status, 401)
        content = answer.split(b"\r\n\r\n", 1)[1]
        if b"Transfer-Encoding: chunked" in answer.split(b"\r\n\r\n", 1)[0]:
            content = content.split(b"\r\n")[1]
        self.assertEqual(len(content.splitlines()), 1, answer)


class TunedChannelTests(_Refusals, SynchronousTestCase):
    """The site's own channel (FastHTTPChannel)."""

    site_class = QuietSite


class PlainChannelTests(_Refusals, SynchronousTestCase):
    """twisted.web's HTTPChannel under the same site and requests."""

    site_class = _PlainSite
