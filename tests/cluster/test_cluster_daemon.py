"""
A lost instance's notices, with real processes (SPEC §8): three ``twistd
socketdock`` children on one real Redis, one SIGKILLed and never restarted;
the two survivors race for its records and exactly one sends each lost
connection's notice, once.  Every wait is on an event (a log line, a
request, an exit), bounded by the class timeout.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from socketdock.relay.session import LOST_INSTANCE_REASON
from tests.cluster.redisserver import NO_REDIS, start_redis
from tests.daemon import get, spawn_socketdock, started
from tests.fakebackend import FakeBackend, start_backend, stop_backend
from tests.wsclient import connect_client

CLIENTS = 3
HEARTBEAT = "0.2"


class Instance:
    """One SocketDock process and, once it listens, where it can be reached."""

    def __init__(self, name: str, process) -> None:
        self.name = name
        self.process = process
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Port 0: the instance names the port it bound, and its callback URLs
        # (and its name in the cluster) use it.
        self.port = await started(reactor, self.process)


class LostInstanceTests(TestCase):
    """SIGKILL one of three instances in a cluster."""

    timeout = 60
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.redis = yield start_redis(self, reactor)
        self.backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, self.backend)
        self.addCleanup(stop_backend, port, self.backend)
        self.instances = {}
        for name in ("lost", "b", "c"):
            process = spawn_socketdock(
                self,
                reactor,
                "--bindip",
                "127.0.0.1",
                "--bindport",
                "0",
                "--backend",
                "http",
                "--messageuri",
                url + "/message",
                "--disconnecturi",
                url + "/disconnect",
                "--ping-interval",
                "0",
                "--cluster-heartbeat",
                HEARTBEAT,
                # Debug: each heartbeat logs a line the test can wait for.
                "--log-level",
                "debug",
                env={"SOCKETDOCK_CLUSTER": self.redis.url(db=0)},
                name=f"socketdock-{name}",
            )
            self.instances[name] = Instance(name, process)
        yield gatherResults([Deferred.fromCoroutine(i.start()) for i in self.instances.values()])
        yield gatherResults(
            [i.process.wait_for("cluster: linked to Redis") for i in self.instances.values()]
        )

    @inlineCallbacks
    def beats_after(self, instance, offset: int, count: int):
        """Wait for ``count`` heartbeats of ``instance`` logged after ``offset``."""
        for _ in range(count):
            offset = yield instance.process.wait_for("cluster: heartbeat", offset)

    @inlineCallbacks
    def test_sigkill_one_notice_per_lost_connection(self):
        """After SIGKILL exactly one survivor sends one recovered notice per lost connection."""
        lost, b, c = (self.instances[n] for n in ("lost", "b", "c"))
        clients = []
        for n in range(CLIENTS):
            client = yield connect_client(reactor, f"ws://127.0.0.1:{lost.port}/ws")
            self.addCleanup(client.shutdown)
            client.send_text(f"hello-{n}")
            clients.append(client)
        messages = yield self.backend.wait_for("message", CLIENTS)
        ids = sorted(m["meta"]["connection_id"] for m in messages)
        # One connection gets tags and a state, through another instance (SPEC §9).
        code, _ = yield self.backend.post_json(f"{b.base}/socket/{ids[0]}/tags", {"add": ["t"]})
        self.assertEqual(code, 200)
        code, body = yield self.backend.post_json(f"{c.base}/socket/{ids[0]}/state", {"n": 1})
        self.assertEqual((code, body), (200, b'{"state":{"n":1}}'))
        # A round trip through the lost instance's Redis connection: every
        # record it wrote before is in Redis by the time this is answered.
        code, _ = yield get(reactor, lost.base + "/tags/barrier")
        self.assertEqual(code, 404)
        # Its connections are reachable through the others while it lives.
        code, _ = yield get(reactor, f"{b.base}/socket/{ids[0]}")
        self.assertEqual(code, 200)

        lost.process.signal("KILL")
        self.assertEqual((yield lost.process.exited), (None, 9))
        notices = yield self.backend.wait_for("disconnect", CLIENTS)
        self.assertEqual(sorted(n["connection_id"] for n in notices), ids)
        for notice in notices:
            meta = notice["meta"]
            self.assertEqual(
                (meta["code"], meta["initiator"], meta.get("recovered")), (None, "server", True)
            )
            self.assertEqual(meta["reason"], LOST_INSTANCE_REASON)
            # The survivor's notice carries what a live one would (SPEC §8, §9).
            if notice["connection_id"] == ids[0]:
                self.assertEqual((meta["tags"], meta["state"]), (["t"], {"n": 1}))
            else:
                self.assertNotIn("tags", meta)
                self.assertNotIn("state", meta)

        # Two more beats of each survivor after the notices: neither claims again.
        after = {i.name: len(i.process.output) for i in (b, c)}
        yield gatherResults([self.beats_after(i, after[i.name], 2) for i in (b, c)])
        self.assertEqual(len(self.backend.disconnects), CLIENTS)
        claims = [i.process.count("stopped beating") for i in (b, c)]
        self.assertEqual(sorted(claims), [0, 1])
        for cid in ids:
            code, _ = yield get(reactor, f"{c.base}/socket/{cid}")
            self.assertEqual(code, 404)
        for client in clients:
            yield client.closed


class SameNameTests(TestCase):
    """Two processes started with the same externalhostandport (a copied INI)."""

    timeout = 60
    skip = NO_REDIS

    @inlineCallbacks
    def test_second_live_instance_is_refused_at_start(self):
        """The second process logs one line naming the cause and exits 1; the first and its connection are untouched."""
        redis = yield start_redis(self, reactor)
        backend = FakeBackend(reactor)
        port, url = yield start_backend(reactor, backend)
        self.addCleanup(stop_backend, port, backend)

        def instance(name: str):
            return spawn_socketdock(
                self,
                reactor,
                "--bindip",
                "127.0.0.1",
                "--bindport",
                "0",
                "--externalhostandport",
                "http://socketdock-1.invalid:8765",
                "--backend",
                "http",
                "--messageuri",
                url + "/message",
                "--disconnecturi",
                url + "/disconnect",
                "--ping-interval",
                "0",
                "--cluster-heartbeat",
                HEARTBEAT,
                env={"SOCKETDOCK_CLUSTER": redis.url(db=0)},
                name=f"socketdock-{name}",
            )

        first = Instance("first", instance("first"))
        yield Deferred.fromCoroutine(first.start())
        yield first.process.wait_for("cluster: linked to Redis")
        client = yield connect_client(reactor, f"ws://127.0.0.1:{first.port}/ws")
        self.addCleanup(client.shutdown)
        code, _ = yield get(reactor, first.base + "/tags/barrier")  # its records are in Redis
        self.assertEqual(code, 404)

        second = instance("second")
        self.assertEqual((yield second.exited), (1, None))
        self.assertEqual(second.count("another live instance already runs as"), 1)
        self.assertEqual(second.count("externalhostandport"), 1)
        self.assertEqual(second.count("Traceback"), 0)
        self.assertEqual(second.count("left by this instance's last run"), 0)
        self.assertEqual(backend.disconnects, [])
        # The first still beats and serves its client.
        code, _ = yield get(reactor, first.base + "/tags/barrier")
        self.assertEqual(code, 404)
        self.assertEqual(first.process.count("rejoining"), 0)
        client.send_text("still here")
        (message,) = yield backend.wait_for("message", 1)
        self.assertEqual(message["message"], "still here")
