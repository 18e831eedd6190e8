"""
Cluster mode's pieces, built from the settings for :mod:`socketdock.tap`: the
registry's events, the backend wrapper, the relay's journal, the reach, and
the service that keeps the link.
"""

from __future__ import annotations

from collections.abc import Callable

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.web.client import Agent, HTTPConnectionPool

from socketdock.cluster.admission import SubscribingBackend
from socketdock.cluster.forward import Forwarder
from socketdock.cluster.node import ClusterNode
from socketdock.cluster.reach import ClusterEvents, ClusterReach
from socketdock.cluster.scripts import Names
from socketdock.config.secrets import Secrets
from socketdock.config.settings import Config, secrets_of
from socketdock.relay.backend import IBackend
from socketdock.relay.registry import Registry


class Cluster:
    """
    Everything cluster mode adds to one instance.

    :param urls: this instance's callback URLs; their base names it in the
        cluster (learned when the listener binds, with port 0).
    :param recover: sends the notices of connections claimed from a lost
        instance (``Relay.recover``; the relay is built after this).
    :param taken: stops the instance, given one line, when another live
        instance runs under the same ``externalhostandport``.
    :param secrets: those in force (the forwarder's token); by default ``config``'s.
    """

    def __init__(
        self,
        config: Config,
        reactor,
        urls,
        recover: Callable[[list[str], dict[str, str]], None],
        retry_policy: Callable[[int], float] | None = None,
        taken: Callable[[str], None] = lambda line: None,
        secrets: Secrets | None = None,
    ) -> None:
        assert config.cluster is not None
        self._config = config
        self._secrets = secrets if secrets is not None else secrets_of(config)
        self._reactor = reactor
        self._names = Names.for_db(config.cluster.db)
        self._reach: ClusterReach | None = None
        self.node = ClusterNode(
            config.cluster,
            self._names,
            lambda: urls.base,
            reactor,
            config.cluster_heartbeat,
            recover,
            self._message,
            self._fenced,
            retry_policy,
            taken=taken,
        )
        #: The registry's :class:`IConnectionEvents`.
        self.events = ClusterEvents(self.node.roster, self.node.subscriptions)
        #: The relay's journal: which notices are owed, kept in Redis.
        self.journal = self.node.roster
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        _PoolCloser(self._pool).setServiceParent(self.node)

    def status(self) -> dict:
        """The ``cluster`` object of ``/status``."""
        status = self.node.status()
        status["messages_dropped"] = self._reach.dropped if self._reach is not None else 0
        return status

    def use_password(self, password: str | None) -> None:
        """Authenticate to Redis with ``password`` from the next (re)connection on."""
        self.node.link.use_password(password)

    def backend(self, backend: IBackend) -> IBackend:
        """The relay's backend, with admissions that wait for their tags' subscriptions."""
        return SubscribingBackend(backend, self.node.subscriptions)

    def make_reach(self, registry: Registry) -> ClusterReach:
        """The callback API's :class:`IReach`; built once, after the registry."""
        assert self._reach is None
        config = self._config
        forwarder = Forwarder(
            HTTPClient(Agent(self._reactor, pool=self._pool)),
            self._reactor,
            self._secrets,
            # A send held for a pending handshake waits for the admission.
            timeout=config.backend_timeout * (config.backend_retries + 1) + 5,
        )
        self._reach = ClusterReach(
            registry,
            self.node.link,
            self._names,
            self.node.roster,
            self.node.subscriptions,
            forwarder,
        )
        return self._reach

    def _message(self, channel: bytes, data: bytes) -> None:
        if self._reach is not None:
            self._reach.message(channel, data)

    def _fenced(self, connection_ids: list[str]) -> None:
        if self._reach is not None:
            self._reach.close_here(connection_ids, 1001, "declared lost by the cluster; reconnect")


class _PoolCloser(Service):
    """Closes the forwarding pool's idle connections at a stop."""

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self._pool = pool

    def stopService(self):
        super().stopService()
        return self._pool.closeCachedConnections()
