"""
The callback API's tag routes (socketdock/api/tags.py) through the real
``Root`` tree and ``StubTreq``: real Site and Request objects, no sockets.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socketdock.api.site import Root, make_api_children, make_health, make_site
from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import LoopbackBackend
from socketdock.relay.reach import IReach, Reached, Unreachable
from socketdock.relay.registry import OutboundFull, Registry
from socketdock.relay.session import Relay
from socketdock.tuning import PLAIN, TUNED
from tests.relay.test_tags import FakeConnection

TOKEN = "t0ken-for-tests"
A, B, C = "a" * 32, "b" * 32, "c" * 32
AUTH = {b"Authorization": [b"Bearer " + TOKEN.encode()]}


class Front:
    """An instance's API tree over a registry of fake connections."""

    def __init__(self, reach: IReach | None = None, max_message_size: int = 64) -> None:
        clock = Clock()
        self.registry = Registry()
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        relay = Relay(LoopbackBackend(), self.registry, metrics, clock, 8)
        api = make_api_children(self.registry, metrics, clock, max_message_size, reach)
        self.root = Root(("/ws", None), api, make_health(relay), TOKEN)  # type: ignore[arg-type]  # no WebSocket resource: these tests never reach /ws
        self.treq = StubTreq(self.root)

    def add(self, connection_id: str, *tags: str, answer=None) -> FakeConnection:
        connection = FakeConnection(connection_id, answer)
        self.registry.add(connection)
        self.registry.retag(connection_id, tags, ())
        return connection


class _Requests(SynchronousTestCase):
    def call(
        self,
        front: Front,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: bytes = b"text/plain",
        auth: bool = True,
    ):
        headers = dict(AUTH) if auth else {}
        headers[b"Content-Type"] = [content_type]
        response = self.successResultOf(
            front.treq.request(  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
                method, "http://relay.test" + path, data=body or None, headers=headers
            )
        )
        return response.code, response.headers, self.successResultOf(front.treq.content(response))  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time


class TagSendTests(_Requests):
    def test_send_reaches_every_carrier(self) -> None:
        """POST /tags/<tag>/send hands one frame to each carrier and answers their count."""
        front = Front()
        a, b, c = front.add(A, "t"), front.add(B, "t", "u"), front.add(C, "u")
        code, headers, body = self.call(front, "POST", "/tags/t/send", b"hi")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 2}))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(
            (a.delivered, b.delivered, c.delivered), ([(b"hi", False)], [(b"hi", False)], [])
        )
        code, _, _ = self.call(front, "POST", "/tags/u/send", b"\x00", b"application/octet-stream")
        self.assertEqual(c.delivered, [(b"\x00", True)])

    def test_percent_encoded_tag(self) -> None:
        """A tag with '/', spaces and non-ASCII is named percent-encoded, %2F included."""
        front = Front()
        a = front.add(A, "did:web:x/y z é")
        code, _, body = self.call(front, "POST", "/tags/did%3Aweb%3Ax%2Fy%20z%20%C3%A9/send", b"m")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1}))
        self.assertEqual(a.delivered, [(b"m", False)])
        code, _, _ = self.call(front, "GET", "/tags/did:web:x%2Fy%20z%20%C3%A9")
        self.assertEqual(code, 200)

    def test_nobody_is_404(self) -> None:
        """A tag nobody carries gets 404 with a one-line reason, on every tag route."""
        front = Front()
        front.add(A, "other")
        for method, path in [
            ("POST", "/tags/t/send"),
            ("POST", "/tags/t/disconnect"),
            ("GET", "/tags/t"),
            ("HEAD", "/tags/t"),
        ]:
            code, _, body = self.call(front, method, path, b"x" if path.endswith("send") else b"")
            self.assertEqual(code, 404, (method, path))
            if method != "HEAD":
                self.assertEqual(body, b"no live connection carries this tag\n")

    def test_too_large_and_bad_text(self) -> None:
        """Over max_message_size is 413; text/* that is not UTF-8 is 400; nothing is sent."""
        front = Front(max_message_size=4)
        a = front.add(A, "t")
        self.assertEqual(self.call(front, "POST", "/tags/t/send", b"12345")[0], 413)
        self.assertEqual(self.call(front, "POST", "/tags/t/send", b"\xff")[0], 400)
        self.assertEqual(a.delivered, [])

    def test_full_clients(self) -> None:
        """Some carriers full: 200 with both counts; all full: 503 with Retry-After."""
        front = Front()
        front.add(A, "t")
        front.add(B, "t", "u", answer=lambda: fail(OutboundFull()))
        code, _, body = self.call(front, "POST", "/tags/t/send", b"x")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1, "full": 1}))
        front.registry.discard(A)
        code, headers, body = self.call(front, "POST", "/tags/u/send", b"x")
        self.assertEqual(code, 503)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"1"])

    def test_bad_tag_in_path(self) -> None:
        """A path tag that is too long, has a control character or is not UTF-8 gets 400."""
        front = Front()
        for tag in ["x" * 201, "a%00b", "a%0Ab", "%FF"]:
            code, _, body = self.call(front, "GET", f"/tags/{tag}")
            self.assertEqual(code, 400, tag)
            self.assertEqual(body.count(b"\n"), 1)
        self.assertEqual(self.call(front, "GET", "/tags/" + "x" * 200)[0], 404)

    def test_unknown_paths_and_methods(self) -> None:
        """/tags/, /tags/t/other and /tags/t/send/x are 404; GET on send is 405."""
        front = Front()
        front.add(A, "t")
        for path in ["/tags", "/tags/", "/tags/t/other", "/tags/t/send/x"]:
            self.assertEqual(self.call(front, "GET", path)[0], 404, path)
        code, headers, _ = self.call(front, "GET", "/tags/t/send")
        self.assertEqual((code, headers.getRawHeaders(b"allow")), (405, [b"POST"]))
        self.assertEqual(self.call(front, "DELETE", "/tags/t")[0], 405)

    def test_token_required(self) -> None:
        """Tag routes need the bearer token like the rest of the callback API."""
        front = Front()
        a = front.add(A, "t")
        for method, path in [
            ("POST", "/tags/t/send"),
            ("GET", "/tags/t"),
            ("POST", f"/socket/{A}/tags"),
            ("POST", "/tags/t/disconnect"),
        ]:
            self.assertEqual(self.call(front, method, path, b"{}", auth=False)[0], 401)
        self.assertEqual((a.delivered, a.closed, a.tags), ([], [], ("t",)))


class BadTagOverTheSiteTests(SynchronousTestCase):
    """
    A bad tag through the real site and channels, where a request with a body
    is routed on its headers (``BoundedRequest``): 400 on every tag route, never 404.
    """

    def answer(self, channel_class: type, raw: bytes) -> bytes:
        front = Front()
        front.add(A, "t")
        channel = make_site(front.root, Clock(), 1024, channel_class).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return transport.value()

    def test_every_route_every_stack(self) -> None:
        """send, disconnect, the tag itself and paths below it; with and without a body."""
        auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        for channel_class in (PLAIN.channel, TUNED.channel):
            for method, path, body in [
                (b"POST", b"/tags/a%00b/send", b"hello"),
                (b"POST", b"/tags/%FF/send", b"hello"),
                (b"POST", b"/tags/" + b"x" * 201 + b"/send", b""),
                (b"POST", b"/tags/a%0Ab/disconnect", b'{"code": 4000}'),
                (b"GET", b"/tags/a%00b", b""),
                (b"GET", b"/tags/a%00b/other", b""),
                (b"POST", b"/tags/a%00b/send/x", b"x"),
            ]:
                raw = (
                    method
                    + b" "
                    + path
                    + b" HTTP/1.1\r\nHost: x\r\n"
                    + auth
                    + b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                answer = self.answer(channel_class, raw)
                where = (channel_class.__name__, path)
                self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (where, answer[:80]))
                self.assertEqual(answer.split(b"\r\n\r\n", 1)[1].count(b"\n"), 1, where)


class TagCountAndCloseTests(_Requests):
    def test_count(self) -> None:
        """GET /tags/<tag> answers the count of live carriers; HEAD answers the same status."""
        front = Front()
        front.add(A, "t")
        front.add(B, "t")
        code, _, body = self.call(front, "GET", "/tags/t")
        self.assertEqual((code, json.loads(body)), (200, {"connections": 2}))
        self.assertEqual(self.call(front, "HEAD", "/tags/t")[:3:2], (200, b""))

    def test_disconnect(self) -> None:
        """POST /tags/<tag>/disconnect closes every carrier with the asked code, as the backend."""
        front = Front()
        a, b = front.add(A, "t"), front.add(B, "u")
        code, _, body = self.call(
            front,
            "POST",
            "/tags/t/disconnect",
            b'{"code": 4001, "reason": "bye"}',
            b"application/json",
        )
        self.assertEqual((code, json.loads(body)), (200, {"connections": 1}))
        self.assertEqual((a.closed, b.closed), ([(4001, "bye", "backend")], []))
        self.assertEqual(self.call(front, "POST", "/tags/u/disconnect")[0], 200)
        self.assertEqual(b.closed, [(1000, "", "backend")])

    def test_disconnect_bad_body(self) -> None:
        """A bad close code is 400 and closes nobody."""
        front = Front()
        a = front.add(A, "t")
        code, _, body = self.call(front, "POST", "/tags/t/disconnect", b'{"code": 1001}')
        self.assertEqual((code, body), (400, b"code must be 1000 or 3000-4999\n"))
        self.assertEqual(a.closed, [])


class ConnectionTagsTests(_Requests):
    def post(self, front: Front, connection_id: str, change: object):
        body = change if isinstance(change, bytes) else json.dumps(change).encode()
        return self.call(front, "POST", f"/socket/{connection_id}/tags", body, b"application/json")

    def test_add_and_remove(self) -> None:
        """POST /socket/<id>/tags changes the tags and answers them; the index follows."""
        front = Front()
        front.add(A)
        code, headers, body = self.post(front, A, {"add": ["x", "y"]})
        self.assertEqual((code, json.loads(body)), (200, {"tags": ["x", "y"]}))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        code, _, body = self.post(front, A, {"add": ["z"], "remove": ["x", "never"]})
        self.assertEqual(json.loads(body), {"tags": ["y", "z"]})
        self.assertEqual(self.call(front, "GET", "/tags/x")[0], 404)
        self.assertEqual(self.call(front, "GET", "/tags/z")[0], 200)

    def test_not_live(self) -> None:
        """An unknown or closed id gets 404."""
        front = Front()
        front.add(A)
        front.registry.discard(A)
        self.assertEqual(self.post(front, A, {"add": ["x"]})[0], 404)
        self.assertEqual(self.post(front, B, {"add": ["x"]})[0], 404)

    def test_bad_bodies(self) -> None:
        """Bad JSON, a non-object, a non-list, a bad tag and passing 64 tags are 400, changing nothing."""
        front = Front()
        a = front.add(A, "keep")
        bad = [
            b"",
            b"{",
            b"[]",
            {"add": "x"},
            {"remove": [1]},
            {"add": [""]},
            {"add": ["a\u0001"]},
            {"add": [str(i) for i in range(64)]},
        ]
        for change in bad:
            code, _, body = self.post(front, A, change)
            self.assertEqual(code, 400, change)
            self.assertEqual(body.count(b"\n"), 1, body)
        self.assertEqual(a.tags, ("keep",))
        code, _, body = self.post(
            front, A, {"add": [str(i) for i in range(64)], "remove": ["keep"]}
        )
        self.assertEqual(code, 200)

    def test_other_socket_routes_unchanged(self) -> None:
        """send still reaches the connection, and GET on the tags route is 405."""
        front = Front()
        a = front.add(A)
        self.assertEqual(self.call(front, "POST", f"/socket/{A}/send", b"x")[0], 200)
        self.assertEqual(a.delivered, [(b"x", False)])
        self.assertEqual(self.call(front, "GET", f"/socket/{A}/tags")[0], 405)
        self.assertEqual(self.call(front, "POST", f"/socket/{A}/tags/x", b"{}")[0], 404)


@implementer(IReach)
class SlowReach:
    """An IReach whose answers the test gives later (a cluster asking other instances)."""

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def _later(self, *args) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d

    def here_only(self) -> SlowReach:
        return self

    send_to_connection = close_connection = change_tags = describe_connection = _later
    send_to_tag = close_tag = count_tag = _later
    confirm_to_connection = confirm_to_tag = list_tag = set_state = _later


class ClusterShapedTests(_Requests):
    def request(self, front: Front, method: str, path: str, body: bytes = b"x"):
        request = front.treq.request  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
        return request(method, "http://relay.test" + path, data=body, headers=AUTH)

    def test_answer_waits_for_the_reach(self) -> None:
        """The API answers once the reach fires, with instances when only those are known."""
        reach = SlowReach()
        front = Front(reach)
        d = self.request(front, "POST", "/tags/t/send")
        self.assertNoResult(d)
        reach.pending[0].callback(Reached(instances=3))
        front.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            json.loads(self.successResultOf(front.treq.content(response))),  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
            {"instances": 3},
        )

    def test_unreachable_is_503_with_retry_after(self) -> None:
        """Unreachable (the cluster link is down) is 503 with its Retry-After and reason."""
        reach = SlowReach()
        front = Front(reach)
        d = self.request(front, "GET", "/tags/t", b"")
        reach.pending[0].errback(Unreachable("cluster link down", retry_after=5))
        front.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertEqual(self.successResultOf(front.treq.content(response)), b"cluster link down\n")  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time

    def test_immediate_unreachable(self) -> None:
        """An Unreachable that has already fired is answered the same way."""
        reach = SlowReach()
        reach._later = lambda *a: fail(Unreachable("no redis", 2))  # type: ignore[method-assign]
        reach.change_tags = reach._later  # type: ignore[method-assign]
        front = Front(reach)
        code, headers, body = self.call(front, "POST", f"/socket/{A}/tags", b"{}")
        self.assertEqual(
            (code, headers.getRawHeaders(b"retry-after"), body), (503, [b"2"], b"no redis\n")
        )

    def test_unexpected_failure_is_500_and_logged(self) -> None:
        """A bug in a reach is a plain 500 and a logged failure, not a hung request."""
        reach = SlowReach()
        front = Front(reach)
        d = self.request(front, "GET", "/tags/t", b"")
        reach.pending[0].errback(ZeroDivisionError())
        front.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
