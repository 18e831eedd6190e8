"""
The twistd plugin's entry points: :class:`Options` and :func:`makeService`.

This is the only module that reads the process environment; everything below it gets
a :class:`~socketdock.config.settings.Config` through constructors.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from socketdock.relay.backend import HTTPBackend, LoopbackBackend
from socketdock.tuned.batchedtcp import batching
from socketdock.tuned.collector import tune_collector
from socketdock.config.settings import SETTINGS, Config, ConfigError, load_config
from socketdock.ops.filelimit import raise_open_file_limit
from socketdock.relay.httpclient import BackendClient, make_http_client, make_pool, make_tls_policy
from socketdock.relay.journal import Journal, JournalService, ThreadWriter
from socketdock.ops.jsonlog import log_from_level
from socketdock.ops.metrics import Metrics
from socketdock.config.preflight import check_startable
from socketdock.relay.localreach import LocalReach
from socketdock.relay.registry import Registry
from socketdock.relay.session import Relay
from socketdock.relay.retry import Backoff
from socketdock.service import SocketDockService, add_listener, exit_zero_on_stop_signals
from socketdock.api.site import Root, make_api_children, make_health, make_site, warn_if_exposed
from socketdock.ws.upgrade import WebSocketUpgrade
from socketdock.ws.protocol import make_ws_factory
from socketdock.relay.wire import CallbackURLs

__all__ = ["Options", "makeService"]


def _option_name(key: str) -> str:
    return key.replace("_", "-")


class Options(usage.Options):
    """
    ``twistd socketdock`` options: ``--config`` plus one ``--key-with-dashes`` per
    setting.  After parsing, ``self["settings"]`` holds the validated
    :class:`~socketdock.config.settings.Config`.
    """

    synopsis = "[--config FILE] [--<setting> VALUE ...]"
    longdesc = (
        "Relay WebSocket clients to an HTTP-only backend. Settings come from these "
        "options, then SOCKETDOCK_<KEY> environment variables, then the [socketdock] "
        "section of --config, then defaults."
    )
    # Generated from SETTINGS so that options cannot drift from the settings table.
    # The default is None so that postOptions can tell a given option from an absent one.
    optParameters = [
        ["config", "c", None, "INI file with a [socketdock] section."],
    ] + [
        [
            _option_name(s.key),
            None,
            None,
            s.help + ("" if s.default is None else f" [default: {s.default}]"),
        ]
        for s in SETTINGS
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.ini")})

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        preflight: Callable[[Config], None] | None = None,
    ) -> None:
        """
        :param environ: the environment to read ``SOCKETDOCK_*`` from; tests pass their
            own so that they never depend on the real process environment.
        """
        super().__init__()
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._preflight = _check_with_global_reactor if preflight is None else preflight

    def postOptions(self) -> None:
        """
        Load and validate the settings.

        :raises usage.UsageError: for any configuration mistake, with a one-line message
            naming the key, so twistd prints it after the usage text without a traceback.
        """
        cli = {
            s.key: self[_option_name(s.key)]
            for s in SETTINGS
            if self[_option_name(s.key)] is not None
        }
        try:
            self["settings"] = config = load_config(cli, self._environ, self["config"])
            self._preflight(config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def _check_with_global_reactor(config: Config) -> None:
    """Check endpoints and ports before twistd starts anything."""
    from twisted.internet import reactor

    check_startable(config, reactor)


def makeService(options: Options, reactor=None, log_beginner=None) -> SocketDockService:
    """
    Build the whole instance from validated settings: the only place that
    picks the global reactor and the global log beginner (the one twistd
    starts its log through, after this returns).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if log_beginner is None:
        from twisted.logger import globalLogBeginner as log_beginner
    log_from_level(options["settings"].log_level, log_beginner)
    raise_open_file_limit()
    reactor.callWhenRunning(exit_zero_on_stop_signals, reactor)
    reactor.callWhenRunning(tune_collector)
    return make_service(options["settings"], reactor)


def make_backend(config: Config, reactor, net, urls: CallbackURLs, metrics: Metrics):
    """
    The backend the settings name, and the connection pool to close at stop
    (None for loopback).  Backend connections are made through ``net``.
    """
    if config.backend != "http":
        return LoopbackBackend(), None
    pool = make_pool(reactor, config.backend_concurrency)
    client = BackendClient(
        make_http_client(
            net, pool, make_tls_policy(config.backend_ca),
            # An inline reply is at most one message: room for twice that.
            max_response_body=2 * config.max_message_size + 64 * 1024,
        ),
        reactor,
        config.backend_timeout,
        config.signing_secret,
        config.backend_concurrency,
        metrics.backend_request,
    )
    backend = HTTPBackend(
        client, reactor, urls, metrics,
        messageuri=config.messageuri,
        connecturi=config.connecturi,
        disconnecturi=config.disconnecturi,
        backoff=Backoff(config.backend_retries),
        inline_reply=config.inline_reply,
    )
    return backend, pool


def make_service(config: Config, reactor) -> SocketDockService:
    """Wire the collaborators bottom-up and attach their listeners."""
    cluster = None
    if config.cluster is not None:
        # Imported only here: without cluster, nothing needs Redis or its client.
        from socketdock.cluster.wiring import Cluster

        cluster = Cluster(config, reactor, recover=lambda ids: relay.recover(ids))
    registry = Registry(cluster.events) if cluster is not None else Registry()
    # Listeners and backend connections use it; timers and the rest use the reactor.
    net = batching(reactor)
    urls = CallbackURLs(config.externalhostandport)
    # The gauge reads the relay built below, only when scraped.
    metrics = Metrics(
        active=registry.__len__, queued=lambda: relay.queued(), tags=registry.tag_count,
        cluster=cluster.status if cluster is not None else None,
    )
    backend, pool = make_backend(config, reactor, net, urls, metrics)
    journal = None
    if config.journal is not None:
        journal = Journal(config.journal, reactor, ThreadWriter(reactor))
    if cluster is not None:
        backend = cluster.backend(backend)
        journal = cluster.journal
    relay = Relay(backend, registry, metrics, reactor, config.queue_limit, journal)

    ws_factory = make_ws_factory(config, relay, reactor)
    upgrade = WebSocketUpgrade(ws_factory)
    health = make_health(relay)
    # Within one instance; cluster mode swaps in an IReach that asks the others.
    reach = LocalReach(registry) if cluster is None else cluster.make_reach(registry)
    api_children = make_api_children(
        registry, metrics, reactor, config.max_message_size, reach, anywhere=cluster is not None)

    service = SocketDockService(relay, pool, config.shutdown_timeout)
    max_body = config.max_message_size
    if cluster is not None:
        # Started before the listeners; stopped after the drain, so the
        # notices it delivered are forgotten in Redis before this instance leaves.
        cluster.node.setServiceParent(service)
    elif journal is not None:
        # Started before the listeners, so the recovered notices are queued
        # first; stopped after them, so it keeps what the drain left.
        JournalService(journal, relay.recover).setServiceParent(service)
    if config.api_listen is None:
        front = Root((config.wspath, upgrade), api_children, health, config.api_token)
        add_listener(service, serverFromString(net, config.listen), make_site(front, reactor, max_body))
    else:
        front = Root((config.wspath, upgrade), None, health, None)
        back = Root(None, api_children, health, config.api_token)
        add_listener(service, serverFromString(net, config.listen), make_site(front, reactor, max_body))
        add_listener(service, serverFromString(net, config.api_listen), make_site(back, reactor, max_body))
    warn_if_exposed(config.api_listen or config.listen, config.api_token)
    return service
