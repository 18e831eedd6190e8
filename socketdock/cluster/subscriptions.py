"""
Which tag channels this instance listens on: one subscription per tag that
at least one of its live connections carries (SPEC §8).

A tag is held once per connection carrying it (and briefly by a change that
is about to add it).  The first hold subscribes, the last release
unsubscribes.  A caller that must not let a tag take effect before other
instances can reach it waits for :meth:`Subscriptions.hold`'s Deferred: it fires
once Redis confirmed the subscription.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from socketdock.cluster.scripts import Names
from socketdock.relay.reach import Unreachable


class Subscriptions:
    """
    Reference-counted tag subscriptions over a link's pub/sub connection.

    :param link: a :class:`socketdock.cluster.link.RedisLink`.
    """

    _log = Logger()

    def __init__(self, link, names: Names) -> None:
        self._link = link
        self._names = names
        self._holds: dict[str, int] = {}
        # tag -> the SUBSCRIBE in flight, or None once confirmed, on the
        # current pub/sub connection.
        self._state: dict[str, Deferred[None] | None] = {}

    def hold(self, tag: str) -> Deferred[None]:
        """
        One more holder of ``tag``.  Fires once the subscription is confirmed,
        or at once while the link is down (:meth:`restore` subscribes later).
        """
        self._holds[tag] = self._holds.get(tag, 0) + 1
        state = self._state[tag] if tag in self._state else self._subscribe(tag)
        if state is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()

        def settled(result: object) -> object:
            waiter.callback(None)
            return result

        state.addBoth(settled)
        return waiter

    def release(self, tag: str) -> None:
        """One holder less; the last one unsubscribes."""
        count = self._holds.get(tag, 0) - 1
        if count > 0:
            self._holds[tag] = count
            return
        self._holds.pop(tag, None)
        if tag in self._state:
            del self._state[tag]
            d = self._link.unsubscribe(self._names.tag_channel(tag))
            d.addErrback(lambda f: f.trap(Unreachable))

    def confirmed(self, tag: str) -> bool:
        """Whether Redis counts this instance among the tag's subscribers."""
        return tag in self._state and self._state[tag] is None

    def held(self) -> int:
        """Tags subscribed to (for /status)."""
        return len(self._holds)

    def _subscribe(self, tag: str) -> Deferred[None] | None:
        if not self._link_ready():
            return None
        d = self._link.subscribe(self._names.tag_channel(tag))
        self._state[tag] = d

        def confirmed(_: object) -> None:
            if self._state.get(tag) is d:
                self._state[tag] = None

        def failed(failure) -> None:
            failure.trap(Unreachable)
            if self._state.get(tag) is d:
                del self._state[tag]  # restore subscribes it on the next link

        d.addCallbacks(confirmed, failed)
        return d

    def _link_ready(self) -> bool:
        return self._link.subscriber_connected()

    def restore(self) -> Deferred[None]:
        """A new pub/sub connection: subscribe to every held tag again."""
        self._state.clear()
        pending = [self._subscribe(tag) for tag in list(self._holds)]
        return gatherResults([d for d in pending if d is not None]).addCallback(lambda _: None)

    def lost_link(self) -> None:
        """The pub/sub connection is gone, and its subscriptions with it."""
        self._state.clear()
