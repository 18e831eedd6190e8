"""The Redis link against a real redis-server: up, commands, pub/sub, down, back."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socketdock.config.cluster import parse_cluster_url
from socketdock.relay.reach import Unreachable
from tests.cluster.redisserver import NO_REDIS, start_redis


class _User:
    """Records what the link tells it; each change fires the next waiter."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.messages: list[tuple[bytes, bytes]] = []
        self._waiters: list[tuple[object, Deferred]] = []
        self.restore = lambda link: succeed(None)

    def link_up(self, link):
        self._event("restore")
        return self.restore(link)

    def link_down(self) -> None:
        self._event("down")

    def message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))
        self._event("message")

    def changed(self, up: bool) -> None:
        self._event("up" if up else "changed-down")

    def _event(self, event: object) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            if waiter[0] == event:
                self._waiters.remove(waiter)
                waiter[1].callback(None)

    def next(self, event: object) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append((event, d))
        return d


class LinkTests(TestCase):
    """RedisLink with a real Redis on loopback."""

    timeout = 30
    skip = NO_REDIS

    @inlineCallbacks
    def setUp(self):  # type: ignore[override]  # trial waits on a Deferred from setUp
        from socketdock.cluster.link import RedisLink

        self.redis = yield start_redis(self, reactor, password="pw-for-tests")
        self.user = _User()
        self.attempts: list[Deferred] = []
        self.link = RedisLink(
            parse_cluster_url(self.redis.url(db=3)),
            reactor,
            self.user,
            self.user.changed,
            retry_policy=self._policy,
        )
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def _policy(self, attempt: int) -> float:
        """Retry every 50 ms; each call fires the next waiter of :meth:`attempted`."""
        if self.attempts:
            # Next turn: the policy is asked in the middle of a ClientService
            # transition, where a test that ends would stop it reentrantly.
            reactor.callLater(0, self.attempts.pop(0).callback, attempt)
        return 0.05

    def attempted(self) -> Deferred:
        """Fires when the link next schedules a retry."""
        d: Deferred = Deferred()
        self.attempts.append(d)
        return d

    def start(self) -> Deferred:
        up = self.user.next("up")
        self.link.startService()
        self.addCleanup(self.link.stopService)
        return up

    @inlineCallbacks
    def test_commands_and_pubsub(self):
        """Once up: commands run in the URL's database with its password, and messages arrive."""
        yield self.start()
        self.assertTrue(self.link.up)
        yield self.link.command("SET", b"k", b"v")
        self.assertEqual((yield self.link.command("GET", b"k")), b"v")
        # A payload of digits stays bytes; nothing guesses numbers.
        yield self.link.command("SET", b"n", b"123")
        self.assertEqual((yield self.link.command("GET", b"n")), b"123")
        yield self.link.subscribe(b"chan")
        arrived = self.user.next("message")
        self.assertEqual((yield self.link.command("PUBLISH", b"chan", b"\xff\x00hi")), 1)
        yield arrived
        self.assertEqual(self.user.messages, [(b"chan", b"\xff\x00hi")])
        self.assertEqual((yield self.link.command("SELECT", 0)), "OK")

    @inlineCallbacks
    def test_restart_restores(self):
        """Redis killed: the link goes down, commands fail Unreachable; restarted: restore runs, then up."""
        yield self.start()
        down = self.user.next("down")
        yield Deferred.fromCoroutine(self.redis.stop())
        yield down
        self.assertFalse(self.link.up)
        yield self.assertFailure(self.link.command("GET", b"k"), Unreachable)
        up = self.user.next("up")
        yield Deferred.fromCoroutine(self.redis.restart())
        yield up
        self.assertEqual(self.user.events.count("restore"), 2)
        self.assertEqual((yield self.link.command("PING")), "PONG")
        changes = [e["log_format"] for e in self.log if "cluster:" in e.get("log_format", "")]
        self.assertEqual(len(changes), 3, changes)  # linked, lost, linked: once per change
        self.assertEqual([e for e in self.log if "log_failure" in e], [])  # no traceback

    @inlineCallbacks
    def test_down_at_start(self):
        """Redis down at start: one line logged, and the link comes up once Redis starts."""
        yield Deferred.fromCoroutine(self.redis.stop())
        tried = [self.attempted() for _ in range(3)]
        up = self.start()
        # Several attempts fail (every 50 ms) before Redis is back, each silently.
        yield tried[-1]
        self.assertFalse(self.link.up)
        lines = [e for e in self.log if "no link to Redis" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertNotIn("pw-for-tests", repr(lines))
        yield Deferred.fromCoroutine(self.redis.restart())
        yield up
        self.assertTrue(self.link.up)

    @inlineCallbacks
    def test_restore_runs_before_up(self):
        """The link counts as up only once the user's restore has fired."""
        held: Deferred = Deferred()
        self.user.restore = lambda link: held
        restoring = self.user.next("restore")
        up = self.start()
        yield restoring
        self.assertFalse(self.link.up)
        held.callback(None)
        yield up
        self.assertTrue(self.link.up)

    @inlineCallbacks
    def test_reconnected_while_restoring(self):
        """Lost and back while a restore runs: the link restores again on the new connections before it is up."""
        first: Deferred = Deferred()
        restores = [first]
        self.user.restore = lambda link: restores.pop(0) if restores else succeed(None)
        restoring = self.user.next("restore")
        self.start()
        yield restoring
        # Wait for both new connections after a Redis restart, the first
        # restore still running.
        both: Deferred = Deferred()
        ready = self.link._ready

        def spy(protocol):
            ready(protocol)
            connected = self.link._commands is not None and self.link._subscriber is not None
            if connected and not both.called:
                both.callback(None)

        self.link._ready = spy  # type: ignore[method-assign]  # spies on each connection made ready
        down = self.user.next("down")
        yield Deferred.fromCoroutine(self.redis.stop())
        yield down
        yield Deferred.fromCoroutine(self.redis.restart())
        yield both
        up = self.user.next("up")
        first.callback(None)  # the restore made on the lost connections ends
        yield up
        self.assertEqual(self.user.events.count("restore"), 2)

    @inlineCallbacks
    def test_wrong_password(self):
        """A refused password: retried, one error line for all the attempts, the password never in it."""
        from socketdock.cluster.link import RedisLink

        url = self.redis.url(db=3).replace("pw-for-tests", "wrong-secret")
        link = RedisLink(parse_cluster_url(url), reactor, self.user, retry_policy=self._policy)
        tried = [self.attempted() for _ in range(4)]
        link.startService()
        self.addCleanup(link.stopService)
        yield tried[-1]
        self.assertFalse(link.up)
        refused = [e for e in self.log if "refused us" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1, refused)
        self.assertNotIn("wrong-secret", repr(list(self.log)))

    @inlineCallbacks
    def test_refused_command(self):
        """A command Redis answers with an error fails as Unreachable (a 503 for the API), with one warning."""
        yield self.start()
        yield self.assertFailure(self.link.command("NOSUCHCOMMAND"), Unreachable)
        warned = [e for e in self.log if "refused a command" in e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        self.assertTrue(self.link.up)


class _LinkStub:
    """What a connection tells the link, recorded."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.reactor = Clock()
        self.messages: list[tuple[bytes, bytes]] = []
        self.lost: list[object] = []

    def _message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))

    def _lost(self, protocol: object) -> None:
        self.lost.append(protocol)


class SubscriberDispatchTests(SynchronousTestCase):
    """The pub/sub connection's dispatch, on bytes as Redis sends them (no Redis needed)."""

    def setUp(self) -> None:
        from socketdock.cluster.link import _Subscriber

        self.link = _LinkStub()
        self.protocol = _Subscriber(self.link)  # type: ignore[arg-type]  # a stub link
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def feed(self, data: bytes) -> None:
        """Bytes from Redis; txredisapi reads each bulk on a later turn of the clock."""
        self.protocol.dataReceived(data)
        for _ in range(100):
            if not self.link.reactor.getDelayedCalls():
                return
            self.link.reactor.advance(0)

    def test_messages_go_to_the_link_confirmations_to_the_caller(self) -> None:
        d = self.protocol.subscribe(b"socketdock:0:tag:a")
        self.assertEqual(
            self.transport.value(), b"*2\r\n$9\r\nSUBSCRIBE\r\n$18\r\nsocketdock:0:tag:a\r\n"
        )
        # A message on an earlier subscription arrives before the confirmation.
        self.feed(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n123\r\n")
        self.assertNoResult(d)
        self.feed(b"*3\r\n$9\r\nsubscribe\r\n$18\r\nsocketdock:0:tag:a\r\n:1\r\n")
        self.assertEqual(self.successResultOf(d), [b"subscribe", b"socketdock:0:tag:a", 1])
        self.assertEqual(self.link.messages, [(b"ch", b"123")])  # bytes, not the number

    def test_no_reply_timeout_on_a_subscription(self) -> None:
        d = self.protocol.subscribe(b"ch")
        self.link.reactor.advance(3600)
        self.assertNoResult(d)

    def test_end_told_to_the_link(self) -> None:
        d = self.protocol.unsubscribe(b"ch")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d)
        self.assertEqual(self.link.lost, [self.protocol])
