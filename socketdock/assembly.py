"""
One instance, built from validated settings: every collaborator after what
it is built on (docs/design.rst, "Assembly"), and the listeners attached.

:mod:`socketdock.tap` reads the settings and the environment and calls
:func:`make_service`; tests call it directly, with their own reactor.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from socketdock.api.auth import BearerTokens
from socketdock.api.site import Root, make_api_children, make_health, make_site, warn_if_exposed
from socketdock.config.endpoints import base_url_for, scheme_of
from socketdock.config.secrets import Secrets
from socketdock.config.settings import Config, max_response_body, secrets_of
from socketdock.config.summary import summary, summary_line
from socketdock.ops.filelimit import RESERVED, ListenerCap, connection_budget, open_file_limit
from socketdock.ops.metrics import Metrics
from socketdock.ops.proxyheader import server_endpoint
from socketdock.ops.runtime import RuntimeMetrics
from socketdock.ops.sdnotify import SystemdNotify
from socketdock.relay.backend import HTTPBackend, LoopbackBackend
from socketdock.relay.budget import ByteBudget
from socketdock.relay.httpclient import BackendClient, make_tls_policy
from socketdock.relay.journal import Journal, JournalService, ThreadWriter
from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import IReach, NoEvents
from socketdock.relay.registry import Registry
from socketdock.relay.retry import Backoff
from socketdock.relay.session import Relay
from socketdock.relay.wire import AnyCallbackURLs, CallbackURLs, LearnedCallbackURLs
from socketdock.reloading import ReloadableTLS, Reloader, reload_on_sighup
from socketdock.service import SocketDockService, TuningService, add_listener
from socketdock.tuning import Stack, choose_stack, make_http_client
from socketdock.ws.factory import make_ws_factory
from socketdock.ws.upgrade import WebSocketUpgrade


def make_backend(
    config: Config,
    reactor,
    net,
    urls: AnyCallbackURLs,
    metrics: Metrics,
    stack: Stack,
    secrets: Secrets | None = None,
):
    """
    The backend the settings name, and the connection pool to close at stop
    (None for loopback).  Backend connections are made through ``net``.

    :param secrets: those in force (the signing secrets); by default ``config``'s.
    """
    if config.backend != "http":
        return LoopbackBackend(), None
    pool = stack.make_pool(reactor, config.backend_concurrency)
    response_limit = max_response_body(config.max_message_size)
    client = BackendClient(
        make_http_client(stack, net, pool, make_tls_policy(config.backend_ca), response_limit),
        reactor,
        config.backend_timeout,
        secrets if secrets is not None else secrets_of(config),
        config.backend_concurrency,
        metrics.backend_request,
        response_limit,
        stack.post,
    )
    # load_config refuses backend = http without a messageuri.
    assert config.messageuri is not None
    backend = HTTPBackend(
        client,
        reactor,
        urls,
        metrics,
        messageuri=config.messageuri,
        connecturi=config.connecturi,
        disconnecturi=config.disconnecturi,
        backoff=Backoff(config.backend_retries),
        inline_reply=config.inline_reply,
    )
    return backend, pool


_log = Logger()


def make_service(
    config: Config,
    reactor,
    stack: Stack | None = None,
    open_files: int | None = None,
    must_not_run: Callable[[str], None] | None = None,
    reload: Callable[[], Config] | None = None,
    notify: SystemdNotify | None = None,
) -> SocketDockService:
    """
    Wire the collaborators bottom-up and attach their listeners.

    :param stack: which faster paths run (:mod:`socketdock.tuning`); by
        default chosen from ``config.tuning`` by each piece's check.
    :param open_files: the open-file limit to budget descriptors by; by
        default the process's soft limit now.
    :param must_not_run: called, after one critical line names why, when the
        instance finds it must not run (cluster mode: another live instance
        has its name); by default the service stops.
    :param reload: the settings read again; given, SIGHUP applies their
        secrets (:mod:`socketdock.reloading`) once the reactor runs.
    :param notify: systemd's notifications (:mod:`socketdock.ops.sdnotify`).
    """
    if stack is None:
        stack = choose_stack(config.tuning)
    if stack.off and config.tuning != "off":
        _log.warn("{line}", line=stack.summary(), tuning=dict(stack.pieces))
    else:
        _log.info("{line}", line=stack.summary(), tuning=dict(stack.pieces))
    given = config  # as read: what SIGHUP compares a new reading with
    config, budget = _budget_descriptors(
        config, open_file_limit() if open_files is None else open_files
    )
    secrets = secrets_of(config)
    urls = (
        LearnedCallbackURLs()
        if config.externalhostandport is None
        else CallbackURLs(config.externalhostandport)
    )
    # Listeners and backend connections use it; timers and the rest use the reactor.
    net = stack.network(reactor)

    metrics = Metrics(tuning=stack.pieces)
    backend, pool = make_backend(config, reactor, net, urls, metrics, stack, secrets)

    # Where the notices owed are kept, and who hears of each connection:
    # a file (journal), or Redis through the cluster's node.
    cluster = None
    journal = None
    if config.cluster is not None:
        # Imported only here: without cluster, nothing needs Redis or its client.
        from socketdock.cluster.wiring import Cluster

        cluster = Cluster(config, reactor, urls, secrets)
        backend = cluster.backend(backend)
    elif config.journal is not None:
        journal = Journal(config.journal, reactor, ThreadWriter(reactor))
    owed = cluster.journal if cluster is not None else journal

    # The registry, and the relay over it and the backend.
    registry = Registry(
        cluster.events if cluster is not None else NoEvents(),
        owed.note if owed is not None else None,
    )
    queued_bytes = ByteBudget(config.max_queued_bytes)
    relay = Relay(
        backend,
        registry,
        metrics,
        reactor,
        config.queue_limit,
        owed,
        queue_bytes=2 * config.max_message_size,
        budget=queued_bytes,
    )
    metrics.read_from(
        active=registry.__len__,
        queued=relay.queued,
        queued_bytes=lambda: queued_bytes.used,
        tags=registry.tag_count,
        cluster=cluster.status if cluster is not None else None,
    )
    service = SocketDockService(relay, pool, config.shutdown_timeout, notify)
    # First in, last out: the patches outlive every connection.
    TuningService(stack).setServiceParent(service)
    RuntimeMetrics(metrics.registry, reactor).setServiceParent(service)

    # How the callback API reaches a connection: here only, or through the
    # cluster.  Either service starts before the listeners: the notices it
    # recovers are queued first.  It stops after the drain, keeping (on
    # disk or in Redis) what the drain could not deliver.
    reach: IReach
    if cluster is None:
        reach = LocalReach(registry, lambda: urls.base)
        if journal is not None:
            JournalService(journal, relay.recover).setServiceParent(service)
    else:

        def taken(line: str) -> None:
            _log.critical("{line}", line=line)
            if must_not_run is not None:
                must_not_run(line)
            elif service.running:
                service.stopService()

        reach = cluster.serve(registry, relay.recover, taken)
        cluster.node.setServiceParent(service)

    # The listeners: the WebSocket upgrade and the callback API.
    upgrade = WebSocketUpgrade(make_ws_factory(config, relay, reactor, stack.ws_specialise))
    health = make_health(relay)
    api_children = make_api_children(
        registry,
        metrics,
        reactor,
        config.max_message_size,
        reach,
        instance=lambda: urls.base,
    )
    tokens = BearerTokens(secrets, metrics, reactor)
    cap = ListenerCap(budget, "listen", metrics.listener_refused)
    max_body = config.max_message_size

    def make_site_for(root: Root, cap: ListenerCap | None = None):
        return make_site(root, reactor, max_body, stack.channel, cap)

    tls: list[ReloadableTLS] = []
    if config.api_listen is None:
        front = Root((config.wspath, upgrade), api_children, health, tokens)
        _listen(service, net, "listen", config.listen, make_site_for(front, cap), urls, tls)
    else:
        front = Root((config.wspath, upgrade), None, health, None)
        back = Root(None, api_children, health, tokens)
        _listen(service, net, "listen", config.listen, make_site_for(front, cap), None, tls)
        _listen(service, net, "api_listen", config.api_listen, make_site_for(back), urls, tls)
    fields = summary(config)
    _log.info("starting: {summary}", summary=summary_line(fields), **fields)
    warn_if_exposed(config.api_listen or config.listen, bool(config.api_tokens))
    if reload is not None:
        use_password = cluster.use_password if cluster is not None else None
        reloader = Reloader(reload, given, secrets, use_password, tls)
        reactor.callWhenRunning(reload_on_sighup, reactor, reloader.reload)
    return service


def _budget_descriptors(config: Config, open_files: int) -> tuple[Config, int]:
    """
    The connections the public listener may hold: the open-file limit less
    what the backend pool and the callback API need; and ``max_connections``
    derived from it when unset (0), with one line saying so.
    """
    budget = connection_budget(open_files, config.backend_concurrency)
    if config.max_connections == 0:
        _log.info(
            "max_connections: {budget} (derived: open-file limit {limit}, less "
            "{pool} for the backend pool (backend_concurrency) and {reserved} kept for "
            "the callback API, /healthz and the rest)",
            budget=budget,
            limit=open_files,
            pool=config.backend_concurrency,
            reserved=RESERVED,
        )
        return attrs.evolve(config, max_connections=budget), budget
    if config.max_connections > budget:
        _log.warn(
            "max_connections {given} is more than the open-file limit {limit} leaves room "
            "for; the listener holds at most {budget} connections (raise LimitNOFILE or "
            "ulimit -n)",
            given=config.max_connections,
            limit=open_files,
            budget=budget,
        )
    return config, budget


def _listen(
    service: SocketDockService, net, name: str, description: str, site, urls, tls: list
) -> None:
    """
    Attach one listener; once bound, record its address on ``service`` and, if it
    serves the callback API (``urls`` given) and the base URL is to be learned
    (port 0), teach ``urls``.  An ``ssl:`` listener's context is added to
    ``tls``, for SIGHUP to reload.
    """
    if scheme_of(description) == "https":
        reloadable = ReloadableTLS(name, description)
        tls.append(reloadable)
        net = reloadable.reactor(net)

    def bound(address) -> None:
        service.bound(name, address)
        if isinstance(urls, LearnedCallbackURLs):
            urls.learn(base_url_for(address.host, address.port, scheme_of(description)))

    service.expect(name)
    add_listener(service, server_endpoint(net, description, net), site, name, bound)
