"""
Cluster mode's pieces, built from the settings for :mod:`socketdock.assembly` in
two steps, because the relay and the cluster are built on each other: the
node first (the registry and the relay are built on its roster, its events
and its subscriptions), then the reach, which puts the node to work.
"""

from __future__ import annotations

from collections.abc import Callable

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.web.client import Agent, HTTPConnectionPool

from socketdock.cluster.admission import SubscribingBackend
from socketdock.cluster.forward import Forwarder
from socketdock.cluster.node import ClusterNode, Recover
from socketdock.cluster.reach import ClusterReach
from socketdock.cluster.scripts import Names
from socketdock.config.secrets import Secrets
from socketdock.config.settings import Config
from socketdock.relay.backend import IBackend
from socketdock.relay.registry import Registry


class Cluster:
    """
    Everything cluster mode adds to one instance.

    :param urls: this instance's callback URLs; their base names it in the
        cluster (learned when the listener binds, with port 0).
    :param secrets: those in force (the forwarder's token).
    """

    def __init__(
        self,
        config: Config,
        reactor,
        urls,
        secrets: Secrets,
        retry_policy: Callable[[int], float] | None = None,
    ) -> None:
        assert config.cluster is not None
        self._config = config
        self._secrets = secrets
        self._reactor = reactor
        self._names = Names.for_db(config.cluster.db)
        #: The membership service: link, heartbeat, roster and subscriptions.
        self.node = ClusterNode(
            config.cluster,
            self._names,
            lambda: urls.base,
            reactor,
            config.cluster_heartbeat,
            retry_policy,
        )
        #: The registry's :class:`IConnectionEvents`.
        self.events = self.node.events
        #: The relay's journal: which notices are owed, kept in Redis.
        self.journal = self.node.roster
        #: The ``cluster`` object of ``/status``.
        self.status = self.node.status
        #: Gives Redis's new password to the link (SIGHUP).
        self.use_password = self.node.link.use_password

    def backend(self, backend: IBackend) -> IBackend:
        """The relay's backend, with admissions that wait for their tags' subscriptions."""
        return SubscribingBackend(backend, self.node.subscriptions)

    def serve(
        self, registry: Registry, recover: Recover, taken: Callable[[str], None]
    ) -> ClusterReach:
        """
        The callback API's :class:`IReach`, with the node put to work on it.

        :param recover: ``Relay.recover``, for the notices of connections
            claimed from a lost instance.
        :param taken: stops the instance, given one line, when another live
            instance runs under the same ``externalhostandport``.
        """
        config = self._config
        pool = HTTPConnectionPool(self._reactor, persistent=True)
        _PoolCloser(pool).setServiceParent(self.node)
        forwarder = Forwarder(
            HTTPClient(Agent(self._reactor, pool=pool)),
            self._reactor,
            self._secrets,
            # A send held for a pending handshake waits for the admission.
            timeout=config.backend_timeout * (config.backend_retries + 1) + 5,
        )
        node = self.node
        reach = ClusterReach(
            registry, node.link, self._names, node.roster, node.subscriptions, forwarder
        )
        node.serve(recover, reach, taken)
        return reach


class _PoolCloser(Service):
    """Closes the forwarding pool's idle connections at a stop."""

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self._pool = pool

    def stopService(self):
        super().stopService()
        return self._pool.closeCachedConnections()
