"""
Unit tests of the HTTP front (socketdock/api/site.py) with no sockets: the real
``Root`` tree through ``treq.testing.StubTreq``, and the real site's channel
over a ``StringTransport`` for what happens before a resource is reached.
"""

from __future__ import annotations

import json
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from socketdock.api.site import Root, make_api_children, make_health, make_site, warn_if_exposed
from socketdock.config.settings import load_config
from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import LoopbackBackend
from socketdock.relay.registry import IConnection, Registry
from socketdock.relay.session import Relay
from socketdock.tuned.fastchannel import FastHTTPChannel
from socketdock.tuning import PLAIN

TOKEN = "t0ken-for-tests"
LIVE = "a" * 32
UNKNOWN = "b" * 32
#: Every status the callback API documents (SPEC §4) plus twisted.web's own 400.
DOCUMENTED = {200, 400, 401, 404, 405, 413, 503}


@implementer(IConnection)
class FakeConnection:
    """A live connection that records what the callback API asks of it."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.delivered: list[tuple[bytes, bool]] = []
        self.tags: tuple[str, ...] = ()
        self.closed: list[tuple[int, str, str]] = []

    backend_state = None  # the backend's state (SPEC §9), never set here

    def confirm(self, timeout: float) -> Deferred[None]:
        return Deferred()  # never confirmed: these tests do not ask

    def deliver_frame(self, frame: object) -> int:
        from socketdock.relay.registry import NOT_OPEN

        return NOT_OPEN  # a tag send falls back to deliver()

    def deliver(self, payload: bytes, is_binary: bool) -> Deferred[None]:
        self.delivered.append((payload, is_binary))
        return succeed(None)

    def close(self, code: int, reason: str, initiator: str) -> None:
        self.closed.append((code, reason, initiator))

    def describe(self) -> dict:
        return {"connection_id": self.connection_id}


class Upgrade(Resource):
    """Stands in for the WebSocket upgrade: says where a request was routed."""

    isLeaf = True

    def render(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"upgrade\n"


class Front:
    """The real resource tree of one instance, built as make_service builds it."""

    def __init__(self, token: str | None = TOKEN, max_message_size: int = 64) -> None:
        self.clock = Clock()
        self.registry = Registry()
        self.connection = FakeConnection(LIVE)
        self.registry.add(self.connection)
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        relay = Relay(LoopbackBackend(), self.registry, metrics, self.clock, 8)
        self.health = make_health(relay)
        self.api = make_api_children(self.registry, metrics, self.clock, max_message_size)
        self.token = token

    def combined(self) -> StubTreq:
        """One listener for WebSockets and the API (no api_listen)."""
        return StubTreq(Root(("/ws", Upgrade()), self.api, self.health, self.token))

    def ws_only(self) -> StubTreq:
        """The WebSocket listener when api_listen is set."""
        return StubTreq(Root(("/ws", Upgrade()), None, self.health, None))

    def api_only(self) -> StubTreq:
        """The api_listen listener."""
        return StubTreq(Root(None, self.api, self.health, self.token))


def bearer(token: str = TOKEN) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Bearer " + token.encode("ascii")]}


class _Requests(SynchronousTestCase):
    def call(
        self, treq: StubTreq, method: str, path: str, body: bytes = b"", headers: dict | None = None
    ) -> tuple[int, Headers, bytes]:
        response = self.successResultOf(
            treq.request(method, "http://relay.test" + path, data=body or None, headers=headers)  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
        )
        return response.code, response.headers, self.successResultOf(treq.content(response))  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time


API_CALLS = [
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("GET", f"/socket/{LIVE}"),
    ("DELETE", f"/socket/{LIVE}"),
    ("POST", f"/socket/{LIVE}/send"),
    ("POST", f"/socket/{LIVE}/disconnect"),
    ("GET", "/nothing-here"),
    ("PUT", "/status"),
    ("GET", "/"),
]


class TokenTests(_Requests):
    """api_token: every callback route but /healthz and /readyz needs the bearer token."""

    def test_every_api_route_needs_the_token(self) -> None:
        """Without the token each API call gets 401, a one-line reason and WWW-Authenticate."""
        treq = Front().combined()
        for method, path in API_CALLS:
            code, headers, body = self.call(treq, method, path, b"x")
            self.assertEqual(code, 401, (method, path))
            self.assertEqual(body, b"missing or wrong bearer token\n")
            self.assertEqual(
                headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="socketdock"']
            )

    def test_nothing_learnt_about_ids_or_paths(self) -> None:
        """A live id, an unknown id and an unknown path get the very same 401."""
        treq = Front().combined()
        answers = set()
        for path in (f"/socket/{LIVE}/send", f"/socket/{UNKNOWN}/send", "/nope/send"):
            for headers in (None, bearer("wrong"), bearer(TOKEN + "x"), bearer(TOKEN[:-1])):
                code, hdrs, body = self.call(treq, "POST", path, b"hi", headers)
                answers.add((code, body, tuple(hdrs.getRawHeaders(b"www-authenticate") or ())))
        self.assertEqual(len(answers), 1, answers)
        self.assertEqual(Front().connection.delivered, [])

    def test_right_token_works(self) -> None:
        """With the token, send delivers to the live connection and /status answers JSON."""
        front = Front()
        treq = front.combined()
        code, _, body = self.call(treq, "POST", f"/socket/{LIVE}/send", b"hello", bearer())
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual(front.connection.delivered, [(b"hello", True)])
        code, _, body = self.call(treq, "GET", "/status", headers=bearer())
        self.assertEqual(code, 200)
        self.assertIn("connections", json.loads(body))
        code, _, _ = self.call(treq, "GET", f"/socket/{UNKNOWN}", headers=bearer())
        self.assertEqual(code, 404)

    def test_compat_answers_are_exactly_ok(self) -> None:
        """send, disconnect and DELETE answer exactly ``OK``, no newline, as the original (SPEC §4)."""
        front = Front()
        treq = front.combined()
        for method, path, body in [
            ("POST", f"/socket/{LIVE}/send", b"x"),
            ("POST", f"/socket/{LIVE}/disconnect", b""),
            ("POST", f"/socket/{LIVE}/disconnect", b'{"code": 4000}'),
            ("DELETE", f"/socket/{LIVE}", b""),
        ]:
            code, headers, content = self.call(treq, method, path, body, bearer())
            self.assertEqual((code, content), (200, b"OK"), (method, path, body))
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        code, _, content = self.call(treq, "POST", f"/socket/{UNKNOWN}/send", b"x", bearer())
        self.assertEqual((code, content), (404, b"no such live connection\n"))

    def test_scheme_is_case_insensitive(self) -> None:
        """'bearer' and 'BEARER' work as well as 'Bearer' (RFC 7235); the token itself is exact."""
        treq = Front().combined()
        for scheme in (b"bearer", b"BEARER"):
            headers = {b"Authorization": [scheme + b" " + TOKEN.encode()]}
            self.assertEqual(self.call(treq, "GET", "/status", headers=headers)[0], 200)
        headers = {b"Authorization": [b"Bearer " + TOKEN.upper().encode()]}
        self.assertEqual(self.call(treq, "GET", "/status", headers=headers)[0], 401)
        headers = {b"Authorization": [b"Basic " + TOKEN.encode()]}
        self.assertEqual(self.call(treq, "GET", "/status", headers=headers)[0], 401)

    def test_health_is_open(self) -> None:
        """/healthz and /readyz answer 200 without a token, on every listener."""
        front = Front()
        for treq in (front.combined(), front.ws_only(), front.api_only()):
            for path in ("/healthz", "/readyz"):
                self.assertEqual(self.call(treq, "GET", path)[:3:2], (200, b"OK\n"))

    def test_upgrade_path_is_open(self) -> None:
        """The WebSocket path needs no token: clients do not have it."""
        code, _, body = self.call(Front().combined(), "GET", "/ws")
        self.assertEqual((code, body), (200, b"upgrade\n"))

    def test_no_token_no_check(self) -> None:
        """Without api_token set, the API answers without an Authorization header."""
        self.assertEqual(self.call(Front(token=None).combined(), "GET", "/status")[0], 200)


class SplitListenerTests(_Requests):
    """api_listen: the callback API is served on its own listener and only there."""

    def test_ws_listener_has_no_api(self) -> None:
        """On the WebSocket listener every API path is a plain 404, token or not."""
        front = Front()
        treq = front.ws_only()
        for method, path in API_CALLS:
            for headers in (None, bearer()):
                code, _, body = self.call(treq, method, path, b"x", headers)
                self.assertEqual((code, body), (404, b"no such path\n"), (method, path))
        self.assertEqual(front.connection.delivered, [])
        self.assertEqual(front.connection.closed, [])

    def test_ws_listener_still_upgrades(self) -> None:
        """The WebSocket listener still routes the upgrade path."""
        self.assertEqual(self.call(Front().ws_only(), "GET", "/ws")[2], b"upgrade\n")

    def test_api_listener_serves_api_not_upgrades(self) -> None:
        """The API listener serves the API behind the token and has no upgrade path."""
        front = Front()
        treq = front.api_only()
        self.assertEqual(self.call(treq, "GET", "/ws")[0], 401)
        self.assertEqual(self.call(treq, "GET", "/ws", headers=bearer())[0], 404)
        code, _, _ = self.call(treq, "POST", f"/socket/{LIVE}/send", b"x", bearer())
        self.assertEqual(code, 200)
        self.assertEqual(front.connection.delivered, [(b"x", True)])


class HostileRequestTests(_Requests):
    """Malformed or oversized requests get a documented status, never a 500."""

    def test_huge_close_reason(self) -> None:
        """A close reason longer than a close frame can hold gets 400 and closes nothing;
        a close body past CLOSE_BODY_LIMIT gets 413 rather than being cut short."""
        front = Front()
        treq = front.combined()
        for reason, status in [("x" * 124, 400), ("x" * 100_000, 413)]:
            body = json.dumps({"code": 4000, "reason": reason}).encode()
            code, _, text = self.call(treq, "POST", f"/socket/{LIVE}/disconnect", body, bearer())
            self.assertEqual(code, status)
            self.assertEqual(len(text.splitlines()), 1)
        self.assertEqual(front.connection.closed, [])

    def test_hostile_json_close_bodies(self) -> None:
        """A lone surrogate, JSON nested past the recursion limit, or non-UTF-8 bytes
        get 400 and one line, on both close routes; nothing is closed."""
        front = Front()
        treq = front.combined()
        bodies = [
            (
                b'{"code": 4000, "reason": "\\ud800"}',
                b"body has a string that is not valid Unicode (lone surrogate)\n",
            ),
            (
                b'{"reason": ["\\udfff"]}',
                b"body has a string that is not valid Unicode (lone surrogate)\n",
            ),
            (b"[" * 2000, b"body is JSON nested too deeply\n"),
            (b'{"":' * 1020, b"body is JSON nested too deeply\n"),
            (b'{"reason": "\xff"}', b"body is not valid UTF-8\n"),
            (b"[" * 100_000, b"body larger than 4096 bytes\n"),
        ]
        for body, reason in bodies:
            for method, path in [
                ("POST", f"/socket/{LIVE}/disconnect"),
                ("DELETE", f"/socket/{LIVE}"),
            ]:
                code, _, text = self.call(treq, method, path, body, bearer())
                self.assertEqual(text, reason, (method, body[:40]))
                self.assertIn(code, (400, 413))
        self.assertEqual(front.connection.closed, [])
        # A surrogate pair is one valid code point, not a lone surrogate.
        code, _, _ = self.call(
            treq, "DELETE", f"/socket/{LIVE}", b'{"reason": "\\ud83d\\ude00"}', bearer()
        )
        self.assertEqual(code, 200)
        self.assertEqual(front.connection.closed, [(1000, "\U0001f600", "backend")])

    def test_close_reason_at_the_limit(self) -> None:
        """A 123-byte reason (the most a close frame holds) is accepted."""
        front = Front()
        body = json.dumps({"code": 4000, "reason": "é" * 61 + "x"}).encode()
        code, _, _ = self.call(front.combined(), "DELETE", f"/socket/{LIVE}", body, bearer())
        self.assertEqual(code, 200)
        self.assertEqual(front.connection.closed, [(4000, "é" * 61 + "x", "backend")])

    def test_send_over_limit_in_the_resource(self) -> None:
        """A send body over max_message_size gets 413 and is not delivered."""
        front = Front(max_message_size=16)
        code, _, _ = self.call(
            front.combined(), "POST", f"/socket/{LIVE}/send", b"x" * 17, bearer()
        )
        self.assertEqual(code, 413)
        self.assertEqual(front.connection.delivered, [])

    def test_non_utf8_text(self) -> None:
        """A text/* send body that is not UTF-8 gets 400."""
        front = Front()
        headers = {**bearer(), b"Content-Type": [b"text/plain"]}
        code, _, _ = self.call(
            front.combined(), "POST", f"/socket/{LIVE}/send", b"\xff\xfe", headers
        )
        self.assertEqual(code, 400)
        self.assertEqual(front.connection.delivered, [])

    def test_head_where_get_is_not_served(self) -> None:
        """HEAD on a POST-only route gets 405 with Allow, not a 500; HEAD works where GET does."""
        treq = Front().combined()
        for path in (f"/socket/{LIVE}/send", f"/socket/{LIVE}/disconnect"):
            code, headers, _ = self.call(treq, "HEAD", path, headers=bearer())
            self.assertEqual(code, 405, path)
            self.assertEqual(headers.getRawHeaders(b"allow"), [b"POST"])
        for path in ("/status", "/healthz", f"/socket/{LIVE}"):
            self.assertEqual(self.call(treq, "HEAD", path, headers=bearer())[0], 200, path)

    def test_paths_below_leaves(self) -> None:
        """/status/x, /metrics/x, /healthz/x and /socket/<id>/send/x are unknown paths: 404."""
        treq = Front().combined()
        for path in (
            "/status/x",
            "/metrics/socket",
            "/healthz/x",
            "/readyz/",
            f"/socket/{LIVE}/send/x",
        ):
            self.assertEqual(self.call(treq, "GET", path, headers=bearer())[0], 404, path)

    def test_odd_ids(self) -> None:
        """Ids with dots, percent escapes, NULs or non-ASCII are 404s, never 500s."""
        treq = Front().combined()
        for cid in ("..", "%2e%2e", "%00", "%ff%fe", "a" * 10_000, "%20", LIVE.upper()):
            code, _, _ = self.call(treq, "GET", f"/socket/{cid}", headers=bearer())
            self.assertEqual(code, 404, cid)


_METHODS = st.sampled_from(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]
)
_SEGMENTS = st.sampled_from(
    [
        "socket",
        LIVE,
        UNKNOWN,
        "send",
        "disconnect",
        "status",
        "metrics",
        "healthz",
        "readyz",
        "ws",
        "",
        "..",
        "%00",
        "%ff",
        "x" * 300,
    ]
)
_HEADER_NAMES = st.sampled_from(
    [
        b"Content-Type",
        b"Authorization",
        b"Content-Encoding",
        b"X-Junk",
        b"Transfer-Encoding",
        b"Expect",
    ]
)
#: Bytes that end a line for str.splitlines(). StubTreq serves through a plain
#: Site, whose form parsing (off in QuietSite) raises on a Content-Type holding
#: one of them; BodyLimitTests.test_line_breaks_in_content_type covers QuietSite.
_LINE_BREAKS = b"\r\n\x0b\x0c\x1c\x1d\x1e\x85"
_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"text/plain",
            b"text/plain; charset=latin-1",
            b"application/json",
            b"Bearer " + TOKEN.encode(),
            b"Bearer",
            b"gzip",
            b"identity",
        ]
    ),
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in _LINE_BREAKS)),
)
_BODIES = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda c, r: json.dumps({"code": c, "reason": r}).encode(),
        st.one_of(st.integers(-10, 70000), st.text(max_size=3), st.none()),
        st.text(max_size=140),
    ),
)


class PropertyTests(_Requests):
    """Whatever the request, the callback API answers a documented status in one line."""

    @settings(max_examples=300, deadline=None)
    @given(
        method=_METHODS,
        segments=st.lists(_SEGMENTS, max_size=4),
        headers=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4),
        body=_BODIES,
        token=st.sampled_from([TOKEN, None]),
    )
    def test_any_request(self, method, segments, headers, body, token) -> None:
        """Any method x path x headers x body gets a documented status, never a 500, in one line or JSON."""
        front = Front(token=token)
        sent: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            sent.setdefault(name, []).append(value)
        path = "/" + "/".join(segments)
        code, response_headers, content = self.call(front.combined(), method, path, body, sent)
        asked = (method, path, sent, body, token, code, content[:100])
        self.assertIn(code, DOCUMENTED, asked)
        if method == "HEAD" or path == "/metrics":
            return
        if code == 400 and not content:
            # twisted.web's own parser refused it (e.g. a bogus Transfer-Encoding)
            # with a bare "400 Bad Request" before any resource ran.
            return
        content_type = (response_headers.getRawHeaders(b"content-type") or [b""])[0]
        if content_type == b"application/json":
            json.loads(content)
        else:
            self.assertTrue(content_type.startswith(b"text/plain"), asked)
            self.assertEqual(len(content.splitlines()), 1, asked)
            if content != b"OK":  # the compat answer; every other line ends
                self.assertTrue(content.endswith(b"\n"), asked)


#: Every callback route that reads its body.
BODY_ROUTES = [
    ("POST", f"/socket/{LIVE}/send"),
    ("POST", f"/socket/{LIVE}/disconnect"),
    ("DELETE", f"/socket/{LIVE}"),
    ("POST", f"/socket/{LIVE}/tags"),
    ("POST", "/tags/t/send"),
    ("POST", "/tags/t/disconnect"),
]
_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"]),  # lone surrogates
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["code", "reason", "\ud800", "x"]), inner, max_size=3),
    ),
    max_leaves=10,
)
_ANY_BODIES = st.one_of(
    st.binary(max_size=5000),
    st.builds(lambda v: json.dumps(v).encode(), _JSON_VALUES),
    st.builds(
        lambda c, r: json.dumps({"code": c, "reason": r}).encode(),
        st.integers(2990, 5010),
        _JSON_LEAVES,
    ),
    st.builds(
        lambda n, opener: opener * n,
        st.integers(1, 6000),
        st.sampled_from([b"[", b'{"":', b'[{"a":']),
    ),
)


class BodyPropertyTests(_Requests):
    """Any bytes as the body of any body-reading route: a 4xx or 200, never a 500, in one line."""

    @settings(max_examples=300, deadline=None)
    @given(
        route=st.sampled_from(BODY_ROUTES),
        body=_ANY_BODIES,
        content_type=st.sampled_from([None, b"text/plain", b"application/json"]),
    )
    def test_any_body(self, route, body, content_type) -> None:
        """No body makes a body-reading route answer 5xx; each answer is one line."""
        method, path = route
        headers = bearer()
        if content_type is not None:
            headers[b"Content-Type"] = [content_type]
        code, _, content = self.call(Front().combined(), method, path, body, headers)
        self.assertLess(code, 500, (method, path, body[:80]))
        self.assertEqual(len(content.splitlines()), 1, (method, path, body[:80], content))


class TokenPropertyTests(_Requests):
    """Any token the settings parser accepts authenticates, and nothing else does."""

    @settings(max_examples=100, deadline=None)
    @given(
        # A comma separates tokens (several admit during a rotation).
        token=st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
            min_size=1,
            max_size=40,
        ),
        other=st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
        ),
    )
    def test_token_round_trip(self, token: str, other: str) -> None:
        """The configured token gets 200 on /status; any other token gets 401."""
        loaded = load_config({"api_token": token}, {}, None).api_token
        assert loaded is not None
        token = loaded
        treq = Front(token=token).combined()
        self.assertEqual(self.call(treq, "GET", "/status", headers=bearer(token))[0], 200)
        if other != token:
            self.assertEqual(self.call(treq, "GET", "/status", headers=bearer(other))[0], 401)


#: The channel class _channel builds; each BodyLimitTests class sets its own.
CHANNEL: type = FastHTTPChannel


def _channel(max_body: int = 16, clock: Clock | None = None):
    """The real site's HTTP channel over a StringTransport."""
    site = make_site(
        Root(("/ws", Upgrade()), Front(token=None).api, {}, None),
        clock or Clock(),
        max_body,
        CHANNEL,
    )
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


class BodyLimitTests(SynchronousTestCase):
    """Bodies over max_message_size are refused before they are buffered (tuned channel)."""

    channel_class: type = FastHTTPChannel

    def setUp(self) -> None:
        self.patch(sys.modules[__name__], "CHANNEL", self.channel_class)

    def test_declared_length_over_limit(self) -> None:
        """A Content-Length over the limit gets 413 at once and the connection closes, unread."""
        channel, transport = _channel()
        channel.dataReceived(
            b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Expect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertNotIn(b"100 Continue", answer)
        self.assertTrue(answer.endswith(b"body larger than 16 bytes\n"))
        self.assertTrue(transport.disconnecting)

    def test_chunked_body_over_limit(self) -> None:
        """A chunked body is cut off with 413 once it passes the limit; no resource runs."""
        channel, transport = _channel()
        channel.dataReceived(
            b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"10\r\n" + b"x" * 16 + b"\r\n1\r\ny\r\n0\r\n\r\n"
        )
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual(answer.count(b"HTTP/1.1"), 1, answer)
        self.assertTrue(transport.disconnecting)

    def test_body_at_limit(self) -> None:
        """A body of exactly the limit reaches the resource."""
        channel, transport = _channel()
        channel.dataReceived(
            b"POST /socket/" + UNKNOWN.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 16\r\n\r\n" + b"x" * 16
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "), transport.value())
        self.assertFalse(transport.disconnecting)

    def test_absurd_header_count(self) -> None:
        """Thousands of headers get twisted.web's 400 and a closed connection, not a 500."""
        channel, transport = _channel()
        lines = b"".join(b"X-%d: y\r\n" % i for i in range(2000))
        channel.dataReceived(b"GET /status HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:80])
        self.assertTrue(transport.disconnecting)

    def test_huge_header(self) -> None:
        """A header line past 16 KiB closes the connection without running a resource."""
        channel, transport = _channel()
        channel.dataReceived(b"GET /status HTTP/1.1\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n")
        self.assertNotIn(b"200", transport.value())
        self.assertNotIn(b"500", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_half_sent_handshake_times_out(self) -> None:
        """A connection that stops sending mid-request is closed after 60 idle seconds."""
        clock = Clock()
        channel, transport = _channel(clock=clock)
        channel.dataReceived(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_line_breaks_in_content_type(self) -> None:
        """A Content-Type holding odd line-break bytes gets an ordinary answer from the real site."""
        for byte in b"\x0b\x0c\x1c\x1d\x1e\x85":
            channel, transport = _channel()
            channel.dataReceived(
                b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: text/plain" + bytes([byte]) + b"x\r\nContent-Length: 2\r\n\r\nhi"
            )
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:80])

    def test_garbage_request_line(self) -> None:
        """A request line that is not HTTP gets 400."""
        channel, transport = _channel()
        channel.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:80])

    def test_malformed_heads_are_quiet_400s(self) -> None:
        """
        A blank before a colon, obs-fold (Transfer-Encoding included) or a
        blank before the first field: 400 and a close, and nothing logged.
        """
        for head in [
            b"Content-Length : 5\r\n",
            b"Transfer-Encoding : chunked\r\n",
            b"Connection : close\r\n",
            b"Upgrade : websocket\r\n",
            b"X-Mine : 1\r\n",
            b"X: a\r\n b\r\n",
            b"Transfer-Encoding: gzip\r\n\t,chunked\r\n",
            b"Content-Type: text/plain\r\n ; charset=utf-8\r\n",
            b" Host: x\r\n",
        ]:
            channel, transport = _channel()
            with capturedLogs() as events:
                channel.dataReceived(
                    b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\n" + head + b"\r\nhello"
                )
            self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n", head)
            self.assertTrue(transport.disconnecting, head)
            self.assertEqual(events, [], head)

    def test_blank_lines_in_a_body_pass(self) -> None:
        """A LF and a blank inside a body are no fold."""
        channel, transport = _channel()
        channel.dataReceived(
            b"POST /socket/" + LIVE.encode() + b"/send HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 6\r\n\r\na\n b\n\t"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:80])


class PlainBodyLimitTests(BodyLimitTests):
    """The same limits and answers with the plain stack's channel (tuning = off)."""

    channel_class = PLAIN.channel


class ExposureWarningTests(SynchronousTestCase):
    """A callback API reachable beyond loopback without a token is warned about."""

    def warned(self, endpoint: str, token: str | None = None) -> list[dict]:
        with capturedLogs() as events:
            warn_if_exposed(endpoint, token, Logger(namespace="test"))
        return [e for e in events if e["log_level"].name == "warn"]

    def test_wildcard_without_token(self) -> None:
        """tcp on every interface, 0.0.0.0, :: or a public address, without a token, warns."""
        for endpoint, interface in [
            ("tcp:8080", "every interface"),
            ("tcp:8080:interface=0.0.0.0", "0.0.0.0"),
            ("tcp6:8080:interface=\\:\\:", "::"),
            ("ssl:8443:privateKey=k.pem:interface=192.0.2.7", "192.0.2.7"),
            ("tcp:port=8080:interface=api.example", "api.example"),
        ]:
            (event,) = self.warned(endpoint)
            self.assertEqual(event["interface"], interface)
            self.assertEqual(event["endpoint"], endpoint)

    def test_loopback_or_token_or_unix(self) -> None:
        """Loopback, a token, or a unix socket: no warning."""
        self.assertEqual(self.warned("tcp:8080:interface=127.0.0.1"), [])
        self.assertEqual(self.warned("tcp:8080:interface=127.9.9.9"), [])
        self.assertEqual(self.warned("tcp6:8080:interface=\\:\\:1"), [])
        self.assertEqual(self.warned("tcp:8080:interface=localhost"), [])
        self.assertEqual(self.warned("tcp:8080:interface=0.0.0.0", TOKEN), [])
        self.assertEqual(self.warned("unix:/run/sd.sock"), [])

    @settings(max_examples=200, deadline=None)
    @given(endpoint=st.text(max_size=40))
    def test_never_raises(self, endpoint: str) -> None:
        """Whatever endpoint text the settings parser accepts, the check returns a bool."""
        from socketdock.config import parse as p

        try:
            endpoint = p.parse_endpoint(endpoint)
        except p.Invalid:
            return
        self.assertIsInstance(warn_if_exposed(endpoint, None, Logger(namespace="test")), bool)


class RefusalTests(_Requests):
    """A refused callback-API request is counted and logged once per address and minute."""

    def tokens_front(self):
        from socketdock.api.auth import BearerTokens
        from socketdock.config.secrets import Secrets

        front = Front()
        self.metrics = Metrics(active=lambda: 0, queued=lambda: 0)
        self.clock = Clock()
        self.secrets = Secrets(api_tokens=("old-token", TOKEN))
        tokens = BearerTokens(self.secrets, self.metrics, self.clock)
        return StubTreq(Root(("/ws", Upgrade()), front.api, front.health, tokens))

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "socketdock_api_refused_total", {"reason": reason}
        )
        assert value is not None
        return value

    def test_any_token_admits(self) -> None:
        """With several tokens set, each one admits; the change is seen at the next request."""
        treq = self.tokens_front()
        for token in ("old-token", TOKEN):
            self.assertEqual(self.call(treq, "GET", "/status", headers=bearer(token))[0], 200)
        from socketdock.config.secrets import Secrets

        self.secrets.replace(Secrets(api_tokens=(TOKEN,)))
        self.assertEqual(self.call(treq, "GET", "/status", headers=bearer("old-token"))[0], 401)
        self.assertEqual(self.call(treq, "GET", "/status", headers=bearer(TOKEN))[0], 200)

    def test_counted_by_reason_and_logged_once_a_minute(self) -> None:
        """Missing and wrong tokens are counted apart; one warn line per address and minute names the peer."""
        treq = self.tokens_front()
        with capturedLogs() as events:
            for _ in range(3):
                self.assertEqual(self.call(treq, "GET", "/status")[0], 401)
                self.assertEqual(
                    self.call(treq, "POST", f"/socket/{LIVE}/send", b"x", bearer("nope"))[0], 401
                )
            self.assertEqual(self.call(treq, "GET", "/", headers=bearer("nope"))[0], 401)
            self.clock.advance(61)
            self.assertEqual(self.call(treq, "GET", "/status", headers=bearer("nope"))[0], 401)
        self.assertEqual(self.refused("missing_token"), 3)
        self.assertEqual(self.refused("wrong_token"), 5)
        lines = [e for e in events if e.get("log_namespace") == "socketdock.api.auth.BearerTokens"]
        self.assertEqual(
            [(e["log_level"].name, e["reason"], e["held_back"]) for e in lines],
            [("warn", "missing_token", 0), ("warn", "wrong_token", 0), ("warn", "wrong_token", 3)],
        )
        self.assertTrue(all(e["peer"] for e in lines))
        self.assertNotIn("nope", repr(lines))

    def test_admitted_requests_count_nothing(self) -> None:
        """A request with a token in force is neither counted nor logged."""
        treq = self.tokens_front()
        with capturedLogs() as events:
            self.assertEqual(self.call(treq, "GET", "/status", headers=bearer())[0], 200)
        self.assertEqual(self.refused("missing_token") + self.refused("wrong_token"), 0)
        self.assertEqual(list(events), [])
