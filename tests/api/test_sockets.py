"""
The one ``/socket/<id>`` tree (socketdock/api/sockets.py) over the local reach
and over the cluster's, through the real ``Root`` and ``StubTreq``: the same
request gets the same answer either way, byte for byte, where the connection
is held here or nowhere.  The cluster runs on the fake Redis of
tests/cluster/fakes.py.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socketdock.api.site import Root, make_api_children
from socketdock.cluster.forward import Forwarder
from socketdock.cluster.reach import ClusterEvents, ClusterReach
from socketdock.cluster.roster import Roster
from socketdock.cluster.scripts import Names
from socketdock.cluster.subscriptions import Subscriptions
from socketdock.ops.metrics import Metrics
from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import HOP_HEADER, IReach
from socketdock.relay.registry import BudgetFull, OutboundFull, Registry
from tests.cluster.fakes import FakeLink, FakeRedis
from tests.cluster.test_forward import Holder
from tests.relay.test_tags import FakeConnection

TOKEN = "t0ken-for-tests"
ME, OTHER = "http://a.example:1", "http://b.example:1"
#: Held here: open, full, over the instance's byte budget, still in its handshake.
LIVE, FULL, BUDGET, PENDING = "a" * 32, "f" * 32, "e" * 32, "p" * 32
#: Held by the other instance (cluster only), and by nobody.
THERE, NOBODY = "b" * 32, "0" * 32


class Instance:
    """One instance's API tree; ``reach`` builds its IReach over its registry."""

    def __init__(self, cluster: bool) -> None:
        clock = Clock()
        self.holder = Holder()
        #: Fires when PENDING's handshake completes.
        self.handshake: Deferred[None] = Deferred()
        if cluster:
            self.redis = FakeRedis()
            self.redis.alive.update({ME, OTHER})
            self.redis.where[THERE] = OTHER
            self.link = FakeLink(self.redis)
            names = Names.for_db(0)
            subscriptions = Subscriptions(self.link, names)
            roster = Roster(self.link, names, lambda: ME, 1.0, lambda ids, details: None)
            forwarder = Forwarder(StubTreq(self.holder), clock, None, timeout=10.0)
            self.registry = Registry(ClusterEvents(roster, subscriptions))
            reach: IReach = ClusterReach(
                self.registry, self.link, names, roster, subscriptions, forwarder
            )
        else:
            self.registry = Registry()
            reach = LocalReach(self.registry, lambda: ME)
        self.connections = {
            LIVE: FakeConnection(LIVE),
            FULL: FakeConnection(FULL, lambda: fail(OutboundFull())),
            BUDGET: FakeConnection(BUDGET, lambda: fail(BudgetFull())),
            PENDING: FakeConnection(PENDING, lambda: self.handshake),
        }
        for connection in self.connections.values():
            self.registry.add(connection)
        metrics = Metrics(active=self.registry.__len__, queued=lambda: 0)
        api = make_api_children(self.registry, metrics, clock, 16, reach)
        self.treq = StubTreq(Root(None, api, {}, TOKEN))

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        sent = {b"Authorization": [b"Bearer " + TOKEN.encode()], b"Content-Type": [b"text/plain"]}
        sent.update(headers or {})
        d = self.treq.request(method, "http://relay.test" + path, data=body or None, headers=sent)  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
        self.treq.flush()
        return d

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        """(status, Retry-After, Content-Type, body), or None while it is not answered."""
        got: list = []
        self.request(method, path, body, headers).addBoth(got.append)
        return self.read(got[0]) if got else None

    def read(self, response):
        content: list[bytes] = []
        self.treq.content(response).addCallback(content.append)  # type: ignore[attr-defined]  # StubTreq adds treq's functions at run time
        return (
            response.code,
            response.headers.getRawHeaders(b"retry-after"),
            response.headers.getRawHeaders(b"content-type"),
            content[0],
        )


#: (method, path, body): every /socket/<id> route, answered from this instance.
REQUESTS = [
    ("GET", f"/socket/{LIVE}", b""),
    ("HEAD", f"/socket/{LIVE}", b""),
    ("GET", f"/socket/{NOBODY}", b""),
    ("POST", f"/socket/{LIVE}/send", b"hi"),
    ("POST", f"/socket/{NOBODY}/send", b"hi"),
    ("POST", f"/socket/{FULL}/send", b"hi"),
    ("POST", f"/socket/{BUDGET}/send", b"hi"),
    ("POST", f"/socket/{LIVE}/send", b"x" * 17),
    ("POST", f"/socket/{LIVE}/send", b"\xff"),
    ("POST", f"/socket/{NOBODY}/send", b"\xff"),
    ("GET", f"/socket/{LIVE}/send", b""),
    ("POST", f"/socket/{LIVE}/send/x", b"hi"),
    ("POST", f"/socket/{NOBODY}/send?confirm=5", b"hi"),
    ("POST", f"/socket/{FULL}/send?confirm=5", b"hi"),
    ("POST", f"/socket/{LIVE}/send?confirm=x", b"hi"),
    ("POST", f"/socket/{LIVE}/disconnect", b'{"code": 4000, "reason": "bye"}'),
    ("POST", f"/socket/{NOBODY}/disconnect", b""),
    ("POST", f"/socket/{LIVE}/disconnect", b'{"code": 2000}'),
    ("DELETE", f"/socket/{LIVE}", b""),
    ("DELETE", f"/socket/{NOBODY}", b""),
    ("DELETE", f"/socket/{NOBODY}", b"[" * 2000),
    ("POST", f"/socket/{LIVE}/tags", b'{"add": ["room"]}'),
    ("POST", f"/socket/{LIVE}/tags", b'{"add": ["' + b"x" * 300 + b'"]}'),
    ("POST", f"/socket/{NOBODY}/tags", b'{"add": ["room"]}'),
    ("POST", f"/socket/{LIVE}/state", b'{"step": 2}'),
    ("POST", f"/socket/{LIVE}/state", b"not json"),
    ("POST", f"/socket/{NOBODY}/state", b"{}"),
    ("PUT", f"/socket/{LIVE}", b""),
    ("GET", f"/socket/{LIVE}/nothing", b""),
    ("GET", "/socket/", b""),
]


class OneTreeTests(SynchronousTestCase):
    def test_same_answers_local_and_cluster(self) -> None:
        """Every route answers the same status, Retry-After, type and body over either reach."""
        for method, path, body in REQUESTS:
            local = Instance(cluster=False).call(method, path, body)
            cluster = Instance(cluster=True).call(method, path, body)
            self.assertEqual(local, cluster, (method, path, body[:20]))
            self.assertIsNotNone(local, (method, path))

    def test_the_answers(self) -> None:
        """What those answers are, for the routes whose failures the reach maps."""
        expected = {
            ("POST", f"/socket/{LIVE}/send"): (200, None, b"OK"),
            ("POST", f"/socket/{NOBODY}/send"): (404, None, b"no such live connection\n"),
            ("POST", f"/socket/{FULL}/send"): (
                503,
                [b"1"],
                b"client is not reading; retry later\n",
            ),
            ("POST", f"/socket/{BUDGET}/send"): (
                503,
                [b"1"],
                b"server has too much data queued; retry later\n",
            ),
            ("GET", f"/socket/{NOBODY}"): (404, None, b"no such live connection\n"),
            ("POST", f"/socket/{NOBODY}/send?confirm=5"): (
                404,
                None,
                b"no such live connection\n",
            ),
            ("POST", f"/socket/{FULL}/send?confirm=5"): (
                503,
                [b"1"],
                b"client is not reading; retry later\n",
            ),
            ("POST", f"/socket/{NOBODY}/state"): (404, None, b"no such live connection\n"),
        }
        for cluster in (False, True):
            instance = Instance(cluster)
            for (method, path), (code, retry, content) in expected.items():
                answer = instance.call(method, path, b"{}" if "state" in path else b"hi")
                assert answer is not None
                self.assertEqual(
                    (answer[0], answer[1], answer[3]), (code, retry, content), (cluster, path)
                )
            self.assertEqual(instance.connections[LIVE].delivered, [(b"hi", False)])

    def test_pending_send_answers_once_delivered(self) -> None:
        """A connection still in its handshake: the send is answered once it opens."""
        for cluster in (False, True):
            instance = Instance(cluster)
            d = instance.request("POST", f"/socket/{PENDING}/send", b"hi")
            self.assertNoResult(d)
            instance.handshake.callback(None)
            instance.treq.flush()
            self.assertEqual(instance.read(self.successResultOf(d))[::3], (200, b"OK"))

    def test_forwarded_elsewhere_and_not_again(self) -> None:
        """Cluster only: an id held elsewhere is asked of its holder, unless the
        request was itself forwarded (then 404, never a second hop)."""
        instance = Instance(cluster=True)
        hop = {HOP_HEADER: [b"1"]}
        for method, path, body in [
            ("POST", f"/socket/{THERE}/send", b"hi"),
            ("POST", f"/socket/{THERE}/send?confirm=5", b"hi"),
            ("POST", f"/socket/{THERE}/state", b"{}"),
            ("POST", f"/socket/{THERE}/tags", b"{}"),
            ("GET", f"/socket/{THERE}", b""),
        ]:
            answer = instance.call(method, path, body, hop)
            assert answer is not None
            self.assertEqual(answer[0], 404, path)
        self.assertEqual(instance.holder.requests, [])
        self.assertIsNone(instance.call("POST", f"/socket/{THERE}/send", b"hi"))
        self.assertEqual(instance.holder.requests[0].uri, f"/socket/{THERE}/send".encode())
        self.assertEqual(Instance(cluster=False).call("GET", f"/socket/{THERE}")[0], 404)

    def test_link_down(self) -> None:
        """Cluster only: an id not held here, with Redis unreachable, is 503 + Retry-After;
        one held here is answered as ever."""
        instance = Instance(cluster=True)
        instance.link.up = False
        answer = instance.call("POST", f"/socket/{NOBODY}/send", b"hi")
        assert answer is not None
        self.assertEqual((answer[0], answer[1]), (503, [b"1"]))
        self.assertEqual(answer[3], b"no link to the cluster's Redis; retry later\n")
        self.assertEqual(instance.call("POST", f"/socket/{LIVE}/send", b"hi")[0], 200)
        self.assertEqual(json.loads(instance.call("GET", f"/socket/{LIVE}")[3]), {})
