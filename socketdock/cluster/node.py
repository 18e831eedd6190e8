"""
One instance's membership of the cluster, as a service: the Redis link, the
heartbeat, and what happens when the link comes and goes.

Started before the listeners; stopped after the drain (it is a child of the
:class:`socketdock.service.SocketDockService`, which drains before it stops its
children), so that the notices sent during the drain are forgotten in Redis
before this instance leaves, and what the drain could not deliver is left
for a survivor to claim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketdock.cluster.link import ILinkUser, RedisLink
from socketdock.cluster.reach import ClusterEvents
from socketdock.cluster.roster import Roster
from socketdock.cluster.scripts import Names
from socketdock.cluster.subscriptions import Subscriptions
from socketdock.config.cluster import RedisAddress
from socketdock.relay.session import LOST_INSTANCE_REASON

#: ``Relay.recover``: connection ids, their kept tags and state, the reason.
Recover = Callable[[list[str], dict[str, str], str], None]


class IClusterReach(Protocol):
    """What the node asks of :class:`socketdock.cluster.reach.ClusterReach`."""

    dropped: int

    def message(self, channel: bytes, data: bytes) -> None: ...

    def close_here(self, connection_ids: list[str], code: int, reason: str) -> None: ...


@implementer(ILinkUser)
class ClusterNode(MultiService):
    """
    The link, this instance's roster and tag subscriptions, the heartbeat,
    and the restore at each new link.

    Built before the registry and the relay, which are built on its roster
    (the owed notices) and its events; put to work by :meth:`serve` once
    they and the reach exist, before it starts.

    :param address: the Redis server.
    :param names: the cluster's key and channel names.
    :param name: this instance's name (its ``externalhostandport``), asked
        for once the link is up.
    :param reactor: connects to Redis and times the heartbeat.
    :param heartbeat: seconds between beats.
    :param clock: times the heartbeat; the reactor unless a test gives a Clock.
    """

    _log = Logger()

    def __init__(
        self,
        address: RedisAddress,
        names: Names,
        name: Callable[[], str],
        reactor,
        heartbeat: float,
        retry_policy: Callable[[int], float] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        self._clock = reactor if clock is None else clock
        self._heartbeat = heartbeat
        self._beat: LoopingCall | None = None
        self._recover: Recover | None = None
        self._reach: IClusterReach | None = None
        self._taken: Callable[[str], None] = lambda line: None
        self.link = RedisLink(address, reactor, self, retry_policy=retry_policy)
        self.link.setServiceParent(self)
        self.roster = Roster(
            self.link,
            names,
            name,
            heartbeat,
            self._claimed,
            self._fenced,
            self._clock,
            self._name_taken,
        )
        self.subscriptions = Subscriptions(self.link, names)
        #: The registry's :class:`IConnectionEvents`.
        self.events = ClusterEvents(self.roster, self.subscriptions)

    def serve(self, recover: Recover, reach: IClusterReach, taken: Callable[[str], None]) -> None:
        """
        What the node's work needs from the instance, given once it exists.

        :param recover: sends the notices of connections claimed from a lost
            instance (``Relay.recover``).
        :param reach: handles tag requests from other instances, and closes
            connections a survivor declared lost while this instance was cut
            off (see :class:`Roster`).
        :param taken: stops this instance, given one line, when another live
            instance runs under its name (see :class:`Roster`).
        """
        self._recover, self._reach, self._taken = recover, reach, taken

    def startService(self) -> None:
        assert self._reach is not None, "serve() the node before it starts"
        super().startService()
        self._beat = LoopingCall(self.roster.beat)
        self._beat.clock = self._clock
        self._beat.start(self._heartbeat, now=False)

    def stopService(self) -> Deferred[None]:
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self.roster.stop_rewriting()
        d = self.roster.leave()
        d.addErrback(lambda f: self._log.failure("cluster: leaving the cluster failed", f))
        d.addCallback(lambda _: MultiService.stopService(self))
        return d

    # ILinkUser

    def link_up(self, link: RedisLink) -> Deferred[None]:
        d = gatherResults([self.roster.rejoin(), self.subscriptions.restore()], consumeErrors=True)

        def first_error(f: Failure) -> Failure:
            f.trap(FirstError)
            return cast(FirstError, f.value).subFailure

        d.addErrback(first_error)
        return d.addCallback(lambda _: None)

    def link_down(self) -> None:
        self.roster.lost_link()
        self.subscriptions.lost_link()

    def message(self, channel: bytes, data: bytes) -> None:
        assert self._reach is not None
        self._reach.message(channel, data)

    # The roster's calls

    def _claimed(self, connection_ids: list[str], details: dict[str, str]) -> None:
        assert self._recover is not None
        self._recover(connection_ids, details, LOST_INSTANCE_REASON)

    def _fenced(self, connection_ids: list[str]) -> None:
        assert self._reach is not None
        self._reach.close_here(connection_ids, 1001, "declared lost by the cluster; reconnect")

    def _name_taken(self, line: str) -> None:
        self._taken(line)

    def status(self) -> dict:
        """The ``cluster`` object of ``/status``."""
        status = {
            "link": "up" if self.link.up else "down",
            "tags_subscribed": self.subscriptions.held(),
            "messages_dropped": self._reach.dropped if self._reach is not None else 0,
        }
        status.update(self.roster.status())
        return status
