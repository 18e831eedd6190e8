"""
An in-memory cluster for unit tests without Redis: one :class:`FakeRedis`
(tag channels, which instance holds which connection, which instances beat)
shared by a :class:`FakeLink` per instance, with
:class:`socketdock.cluster.link.RedisLink`'s interface (``up``, ``command``,
``eval``, ``subscribe``, ``unsubscribe``, ``subscriber_connected``).

A command is answered from memory at once, unless the link is ``holding``:
then it waits in ``pending`` until the test answers it, fails it, or takes
the link down (which fails it :class:`Unreachable`, as RedisLink does).  Of
the Lua scripts only the two read-only lookups are played in Python (LOCATE,
INSTANCES: a few lines each); REJOIN, BEAT and LEAVE always wait for the test
to answer with a result of the script's shape.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from socketdock.cluster.scripts import APPLY, BEAT, INSTANCES, LEAVE, LOCATE, REJOIN
from socketdock.relay.reach import Unreachable

_SCRIPTS = {
    REJOIN: "REJOIN",
    APPLY: "APPLY",
    BEAT: "BEAT",
    LEAVE: "LEAVE",
    LOCATE: "LOCATE",
    INSTANCES: "INSTANCES",
}


@attrs.define
class Call:
    """One command or script waiting for its answer."""

    name: str
    args: tuple
    deferred: Deferred
    #: What Redis would answer, or None for a script the fake does not play.
    effect: Callable[[], object] | None


class FakeRedis:
    """What every link of one cluster sees."""

    def __init__(self) -> None:
        #: connection id -> the instance holding it (the ``where`` hash).
        self.where: dict[str, str] = {}
        #: Instances whose heartbeat is alive.
        self.alive: set[str] = set()
        self._channels: dict[bytes, list[FakeLink]] = {}
        #: Every PUBLISH, in order: (channel, data).
        self.published: list[tuple[bytes, bytes]] = []

    def subscribers(self, channel: bytes) -> int:
        return len(self._channels.get(channel, ()))

    def run(self, link: FakeLink, name: str, args: tuple) -> object:
        if name == "PUBLISH":
            channel, data = args
            self.published.append((channel, data))
            links = list(self._channels.get(channel, ()))
            for other in links:
                other.on_message(channel, data)
            return len(links)
        if name == "PUBSUB" and args[0] == "NUMSUB":
            return [args[1], self.subscribers(args[1])]
        if name in ("HSET", "HDEL", "SADD", "SREM"):
            return 1  # the roster's mirror of its records: not read back here
        raise NotImplementedError(f"the fake Redis does not know {name}")

    def locate(self, connection_id: str) -> bytes | None:
        holder = self.where.get(connection_id)
        return holder.encode() if holder in self.alive else None

    def instances(self) -> list[bytes]:
        return [name.encode() for name in sorted(self.alive)]

    def subscribe(self, link: FakeLink, channel: bytes) -> list:
        if link not in self._channels.setdefault(channel, []):
            self._channels[channel].append(link)
        return [b"subscribe", channel, 1]

    def unsubscribe(self, link: FakeLink, channel: bytes) -> list:
        if link in self._channels.get(channel, ()):
            self._channels[channel].remove(link)
        return [b"unsubscribe", channel, 0]

    def drop(self, link: FakeLink) -> None:
        """A link's pub/sub connection closed: its subscriptions go with it."""
        for links in self._channels.values():
            if link in links:
                links.remove(link)


class FakeLink:
    """One instance's link to a :class:`FakeRedis`."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        #: Whether the cluster counts the link as up (as RedisLink.up).
        self.up = True
        #: Whether both connections are there (up, or restoring).
        self.connected = True
        #: Hold every command in :attr:`pending` until the test answers it.
        self.holding = False
        self.pending: list[Call] = []
        #: Called for each message on a subscribed channel.
        self.on_message: Callable[[bytes, bytes], None] = lambda channel, data: None

    def subscriber_connected(self) -> bool:
        return self.connected

    def command(self, name: str, *args: object) -> Deferred[object]:
        return self._call(name, args, lambda: self.redis.run(self, name, args))

    def eval(self, script: bytes, keys: list, args: list) -> Deferred[object]:
        name = _SCRIPTS[script]
        effect: Callable[[], object] | None = None
        if script == LOCATE:
            effect = lambda: self.redis.locate(args[1])  # noqa: E731
        elif script == INSTANCES:
            effect = self.redis.instances
        return self._call(name, tuple(args), effect)

    def subscribe(self, channel: bytes) -> Deferred[object]:
        return self._call("SUBSCRIBE", (channel,), lambda: self.redis.subscribe(self, channel))

    def unsubscribe(self, channel: bytes) -> Deferred[object]:
        if not self.connected:
            return succeed(None)
        return self._call("UNSUBSCRIBE", (channel,), lambda: self.redis.unsubscribe(self, channel))

    def _call(self, name: str, args: tuple, effect: Callable[[], object] | None):
        if not self.connected:
            return fail(Unreachable("no link to Redis; retry later"))
        if effect is not None and not self.holding:
            return succeed(effect())
        d: Deferred[object] = Deferred()
        self.pending.append(Call(name, args, d, effect))
        return d

    # -- what the test does ------------------------------------------------------

    def names(self) -> list[str]:
        """The names of the calls waiting, in order."""
        return [call.name for call in self.pending]

    def answer(self, index: int = 0, *result: object) -> None:
        """Answer a waiting call: with ``result``, or what Redis would answer."""
        call = self.pending.pop(index)
        if result:
            call.deferred.callback(result[0])
        else:
            assert call.effect is not None, f"{call.name} needs an answer from the test"
            call.deferred.callback(call.effect())

    def refuse(self, index: int, error: Exception) -> None:
        """Fail a waiting call (a refusal: :class:`socketdock.cluster.link.RedisRefused`)."""
        self.pending.pop(index).deferred.errback(error)

    def go_down(self) -> None:
        """Both connections lost: what waits fails, subscriptions are gone."""
        self.up = self.connected = False
        self.redis.drop(self)
        pending, self.pending = self.pending, []
        for call in pending:
            call.deferred.errback(Unreachable("lost the link to Redis; retry later"))

    def reconnect(self) -> None:
        """Connections made again, not up yet (restoring: RedisLink's link_up)."""
        self.connected = True


class NoTagRequests:
    """A reach for a node whose test sends no tag requests: it only counts fenced closes."""

    dropped = 0

    def __init__(self) -> None:
        self.closed: list[str] = []

    def message(self, channel: bytes, data: bytes) -> None:
        raise AssertionError(f"no tag request expected, got one on {channel!r}")

    def close_here(self, connection_ids: list[str], code: int, reason: str) -> None:
        self.closed.extend(connection_ids)
