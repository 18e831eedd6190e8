"""
The link to Redis: two connections (commands, and pub/sub, which Redis
dedicates to subscriptions), kept up by themselves, and one state, up or down.

txredisapi supplies the wire protocol and its commands.  Connecting,
reconnecting and backing off are done here with Twisted's ``ClientService`` on
the reactor we are given, rather than by txredisapi's connection functions,
which use the global reactor and hide when a connection comes and goes: the
cluster must know, to answer 503 while it is down and to restore its state
in Redis (:meth:`ILinkUser.link_up`) before it says it is up again.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import txredisapi  # type: ignore[import-untyped]  # ships no type information
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from socketdock.config.cluster import RedisAddress
from socketdock.relay.reach import Unreachable

#: Seconds before a Redis command without an answer counts as a lost link.
REPLY_TIMEOUT = 5.0

#: Seconds to wait for a TCP connection to Redis.
CONNECT_TIMEOUT = 5.0


class RedisRefused(Unreachable):
    """
    Redis answered a command with an error (out of memory, ``READONLY``,
    still loading).

    :ivar why: Redis's own words.
    """

    def __init__(self, why: str) -> None:
        super().__init__("Redis refused the request; retry later")
        self.why = why


class ILinkUser(Interface):
    """What the link tells the cluster."""

    def link_up(link: RedisLink) -> Deferred[None]:
        """
        Both connections are ready: restore this instance's state in Redis and
        its subscriptions.  The link counts as up once this fires.
        """

    def link_down() -> None:
        """A connection was lost; the link will come back by itself."""

    def message(channel: bytes, data: bytes) -> None:
        """A message arrived on a subscribed channel."""


class _Linked:
    """
    What both connections share: txredisapi's protocol on our reactor,
    telling the link of its end.
    """

    def __init__(self, link: RedisLink) -> None:
        # charset None: replies stay bytes (frames may be binary); no number
        # guessing, which would turn a payload "123" into an int.  No password
        # or database here: txredisapi would send AUTH and SELECT itself and
        # drop the connection when they fail, in the middle of ClientService's
        # connecting state, which then never retries; the link sends them.
        super().__init__(  # type: ignore[call-arg]  # txredisapi's protocol, next in the MRO
            charset=None, replyTimeout=REPLY_TIMEOUT, convertNumbers=False
        )
        self.callLater = link.reactor.callLater
        self._link = link

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)  # type: ignore[misc]  # txredisapi's protocol, next in the MRO
        self._link._lost(self)


class _Commands(_Linked, txredisapi.BaseRedisProtocol):
    """The command connection."""


class _Subscriber(_Linked, txredisapi.SubscriberProtocol):
    """
    The pub/sub connection: txredisapi's ``SubscriberProtocol`` sorts messages
    from confirmations; messages go to the link.  Each SUBSCRIBE or UNSUBSCRIBE
    names one channel, so each gets exactly one confirmation, in order.  Neither
    has a reply timeout of its own: the command connection's timeouts find a
    dead server.
    """

    def messageReceived(self, pattern: bytes | None, channel: bytes, message: bytes) -> None:
        self._link._message(channel, message)

    def subscribe(self, channel: bytes) -> Deferred:
        return self.execute_command("SUBSCRIBE", channel, apply_timeout=False)

    def unsubscribe(self, channel: bytes) -> Deferred:
        return self.execute_command("UNSUBSCRIBE", channel, apply_timeout=False)


class _ProtocolFactory(Factory):
    """Builds one kind of connection for the link."""

    isLazy = True
    noisy = False

    def __init__(self, link: RedisLink, kind: type) -> None:
        self._link = link
        self._kind = kind

    def buildProtocol(self, addr):
        protocol = self._kind(self._link)
        protocol.factory = self
        return protocol


class RedisLink(Service):
    """
    Keeps a command and a pub/sub connection to Redis, and says whether the
    cluster link is up.

    :param address: the Redis server.
    :param reactor: connects, times and retries; nothing here uses the
        global reactor.
    :param user: an :class:`ILinkUser`.
    :param changed: called with True or False each time the link comes up or
        goes down (for the metric and the log).
    """

    _log = Logger()

    def __init__(
        self,
        address: RedisAddress,
        reactor,
        user,
        changed: Callable[[bool], None] = lambda up: None,
        retry_policy: Callable[[int], float] | None = None,
    ) -> None:
        self.address = address
        self.reactor = reactor
        self._user = user
        self._changed = changed
        self._policy = retry_policy or backoffPolicy(initialDelay=0.2, maxDelay=5.0)
        self._commands: _Commands | None = None
        self._subscriber: _Subscriber | None = None
        self._services: list[ClientService] = []
        self.up = False
        # None until the first attempt ends; then what was last logged.
        self._logged: bool | None = None
        self._restoring: Deferred | None = None
        self._up_waiters: list[Deferred[None]] = []
        self._down_waiters: list[Deferred[None]] = []
        self._refusal: str | None = None
        self._rejections = 0
        # The last refusal of a command logged since the link came up.
        self._command_refusal: str | None = None

    def use_password(self, password: str | None) -> None:
        """
        Send ``password`` from the next connection on (a rotated secret):
        connections already authenticated stay as they are.
        """
        self.address = attrs.evolve(self.address, password=password)

    # -- the service ---------------------------------------------------------

    def _endpoint(self):
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, self.address.host, self.address.port, timeout=CONNECT_TIMEOUT
        )
        if self.address.tls:
            endpoint = wrapClientTLS(optionsForClientTLS(self.address.host), endpoint)
        return endpoint

    def startService(self) -> None:
        super().startService()
        for kind in (_Commands, _Subscriber):
            service = ClientService(
                self._endpoint(),
                _ProtocolFactory(self, kind),
                retryPolicy=self._retry,
                clock=self.reactor,
                prepareConnection=self._prepared,
            )
            self._services.append(service)
            service.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        services, self._services = self._services, []
        restoring, self._restoring = self._restoring, None
        if restoring is not None:
            restoring.cancel()
        self.up = False
        return gatherResults([s.stopService() for s in services]).addCallback(lambda _: None)

    def _retry(self, attempt: int) -> float:
        if attempt == 1 and not self._rejections:
            self._down("cannot connect")
        # A refused connection was made, so ClientService counts it as a
        # success and would retry at once: the refusals count too.
        return self._policy(max(attempt, self._rejections))

    # -- connections coming and going --------------------------------------------

    def _prepared(self, proxy) -> None:
        """
        ClientService's hook for a new connection.  Nothing that waits on the
        network happens inside it: ClientService cannot take a connection
        lost while its preparation runs.  AUTH and SELECT follow on the next
        turn, as requests on a connection it counts as made.
        """
        self.reactor.callLater(0, self._set_up, proxy)

    def _set_up(self, proxy) -> None:
        """``proxy`` wraps our protocol; whenConnected fires with the protocol itself."""
        d = proxy.whenConnected()
        d.addCallback(self._authenticate)
        d.addCallbacks(self._ready, lambda f: None)

    def _authenticate(self, protocol: _Commands | _Subscriber) -> Deferred:
        """
        AUTH, and SELECT on the command connection (pub/sub channels are not
        per database).  Refused: the connection is closed and made again after
        a delay that grows with each refusal.
        """
        address = self.address
        d: Deferred = succeed(None)
        if address.password is not None:
            d.addCallback(lambda _: protocol.auth(address.password, address.username))
        if address.db and not isinstance(protocol, _Subscriber):
            d.addCallback(lambda _: protocol.select(address.db))

        def refused(failure: Failure) -> Failure:
            if failure.check(txredisapi.ResponseError):
                # Redis's own words (WRONGPASS, LOADING, ...), never our password.
                self._refused(failure.getErrorMessage())
                self._rejections += 1
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            return failure

        return d.addCallbacks(lambda _: protocol, refused)

    def _ready(self, protocol: _Commands | _Subscriber) -> None:
        if not protocol.connected or not self.running:
            return
        if isinstance(protocol, _Subscriber):
            self._subscriber = protocol
        else:
            self._commands = protocol
        self._restore()

    def _restore(self) -> None:
        """Restore on this pair of connections, unless a restore already runs."""
        if self._commands is None or self._subscriber is None or self._restoring is not None:
            return
        pair = (self._commands, self._subscriber)
        d = self._restoring = self._user.link_up(self)
        d.addCallbacks(self._restored, self._restore_failed, (pair,))

    def _restored(self, _: object, pair: tuple) -> None:
        self._restoring = None
        if not self.running:
            return
        if pair != (self._commands, self._subscriber):
            # Lost and reconnected while restoring: what was restored went
            # with the old connections, so restore on the new ones.
            self._restore()
            return
        self.up = True
        self._refusal = None
        self._command_refusal = None
        self._rejections = 0
        self._changed(True)
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._logged is not True:
            self._logged = True
            self._log.info("cluster: linked to Redis at {address}", address=str(self.address))

    def _restore_failed(self, failure: Failure) -> None:
        self._restoring = None
        if not self.running or failure.check(txredisapi.ConnectionError, CancelledError):
            return  # the connection went; it comes back by itself
        if failure.check(Unreachable) and not failure.check(RedisRefused):
            return
        if failure.check(RedisRefused):
            # Redis refused part of the restore (logged where it was refused).
            self._log.warn(
                "cluster: restoring this instance's state in Redis failed; "
                "trying again on new connections"
            )
        else:
            self._log.failure("cluster: restoring this instance's state in Redis failed", failure)
        # Start over on fresh connections rather than run half restored.
        for protocol in (self._commands, self._subscriber):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()

    def _lost(self, protocol: _Linked) -> None:
        if protocol is self._commands:
            self._commands, other = None, self._subscriber
        elif protocol is self._subscriber:
            self._subscriber, other = None, self._commands
        else:
            return
        if not self.running:
            return  # stopping: ClientService closes each connection itself
        # The other connection is dropped too, so both come back together and
        # the restore sees a fresh subscription list.
        if other is not None and other.transport is not None:
            other.transport.loseConnection()
        self._down("connection lost")

    def _down(self, why: str) -> None:
        was_up, self.up = self.up, False
        self._user.link_down()
        if was_up:
            self._changed(False)
            waiters, self._down_waiters = self._down_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        if self._logged is not False and self.running:
            self._logged = False
            self._log.warn(
                "cluster: no link to Redis at {address} ({why}); local connections are "
                "served, requests that need other instances answer 503 until it is back",
                address=str(self.address),
                why=why,
            )

    def _refused(self, why: str) -> None:
        # Retried like a lost connection; said once until the reason changes.
        if why == self._refusal:
            return
        self._refusal = why
        self._log.error(
            "cluster: Redis at {address} refused us: {why}", address=str(self.address), why=why
        )

    def _message(self, channel: bytes, data: bytes) -> None:
        try:
            self._user.message(channel, data)
        except Exception:
            self._log.failure("cluster: handling a message on {channel!r} failed", channel=channel)

    # -- for the cluster -------------------------------------------------------

    def when_up(self) -> Deferred[None]:
        """Fires once the link is up (at once if it is)."""
        if self.up:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._up_waiters.append(d)
        return d

    def when_down(self) -> Deferred[None]:
        """Fires once the link is down (at once if it is)."""
        if not self.up:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._down_waiters.append(d)
        return d

    def command(self, name: str, *args: object) -> Deferred[object]:
        """
        Run one Redis command.  Fails with :class:`Unreachable` when there is no
        connection (restores run before the link is up, so this does not
        wait for ``up``).
        """
        protocol = self._commands
        if protocol is None or not protocol.connected:
            return fail(Unreachable("no link to Redis; retry later"))
        try:
            d = protocol.execute_command(name, *args)
        except txredisapi.ConnectionError:
            return fail(Unreachable("no link to Redis; retry later"))
        return d.addErrback(self._as_unreachable)

    def eval(self, script: bytes, keys: list, args: list) -> Deferred[object]:
        """Run a Lua script (by its hash once Redis knows it)."""
        protocol = self._commands
        if protocol is None or not protocol.connected:
            return fail(Unreachable("no link to Redis; retry later"))
        return protocol.eval(script, keys, args).addErrback(self._as_unreachable)

    def subscriber_connected(self) -> bool:
        """Whether the pub/sub connection is there (it may still be restoring)."""
        return self._subscriber is not None and bool(self._subscriber.connected)

    def subscribe(self, channel: bytes) -> Deferred[object]:
        """Subscribe the pub/sub connection to one channel."""
        protocol = self._subscriber
        if protocol is None or not protocol.connected:
            return fail(Unreachable("no link to Redis; retry later"))
        return protocol.subscribe(channel).addErrback(self._as_unreachable)

    def unsubscribe(self, channel: bytes) -> Deferred[object]:
        """Unsubscribe from one channel (harmless when not subscribed)."""
        protocol = self._subscriber
        if protocol is None or not protocol.connected:
            return succeed(None)  # nothing to undo: a new connection starts empty
        return protocol.unsubscribe(channel).addErrback(self._as_unreachable)

    def _as_unreachable(self, failure: Failure):
        """
        The failures a caller must expect, as :class:`Unreachable`: the link
        went, or Redis refused the command (out of memory, ``READONLY``, still
        loading after a restart).  A refusal is logged when its reason differs
        from the last one logged since the link came up, not per command.
        """
        if failure.check(txredisapi.ConnectionError):  # TimeoutError is one too
            raise Unreachable("lost the link to Redis; retry later")
        if failure.check(txredisapi.ResponseError):
            # A script's refusal names the script and the line ("... script:
            # <sha>, on @user_script:8."): the reason is what comes before.
            why = failure.getErrorMessage().split(". script: ")[0]
            if why != self._command_refusal:
                self._command_refusal = why
                self._log.warn("cluster: Redis refused a command: {why}", why=why)
            raise RedisRefused(why)
        return failure
