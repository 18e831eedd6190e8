"""
The twistd plugin's entry points: :class:`Options` and :func:`makeService`.

This is the only module that reads the process environment; everything below it gets
a :class:`~socketdock.config.settings.Config` through constructors.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

import attrs
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from socketdock.api.auth import BearerTokens
from socketdock.api.site import Root, make_api_children, make_health, make_site, warn_if_exposed
from socketdock.config.endpoints import base_url_for, scheme_of
from socketdock.config.preflight import check_startable
from socketdock.config.secrets import Secrets
from socketdock.config.settings import (
    SETTINGS,
    Config,
    ConfigError,
    closest_key,
    environ_warnings,
    load_config,
    max_response_body,
    secrets_of,
)
from socketdock.config.summary import summary, summary_line
from socketdock.ops.filelimit import (
    RESERVED,
    ListenerCap,
    connection_budget,
    open_file_limit,
    raise_open_file_limit,
)
from socketdock.ops.jsonlog import log_from_level
from socketdock.ops.metrics import Metrics
from socketdock.ops.proxyheader import server_endpoint
from socketdock.ops.runtime import RuntimeMetrics
from socketdock.ops.sdnotify import SystemdNotify, from_environ
from socketdock.relay.backend import HTTPBackend, LoopbackBackend
from socketdock.relay.budget import ByteBudget
from socketdock.relay.httpclient import BackendClient, make_tls_policy
from socketdock.relay.journal import (
    Journal,
    JournalError,
    JournalService,
    ThreadWriter,
    check_journal,
)
from socketdock.relay.localreach import LocalReach
from socketdock.relay.reach import IReach, NoEvents
from socketdock.relay.registry import Registry
from socketdock.relay.retry import Backoff
from socketdock.relay.session import Relay
from socketdock.relay.wire import AnyCallbackURLs, CallbackURLs, LearnedCallbackURLs
from socketdock.reloading import ReloadableTLS, Reloader, reload_on_sighup
from socketdock.service import (
    SocketDockService,
    TuningService,
    add_listener,
    exit_right_after_shutdown,
    exit_zero_on_stop_signals,
)
from socketdock.tuned.collector import tune_collector
from socketdock.tuning import Stack, choose_stack, make_http_client
from socketdock.ws.factory import make_ws_factory
from socketdock.ws.upgrade import WebSocketUpgrade

__all__ = ["Options", "makeService"]


#: How every line to the operator starts, as the README shows it.
PREFIX = "twistd socketdock: "


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
        stderr: TextIO | None = None,
    ) -> None:
        """
        :param environ: the environment to read ``SOCKETDOCK_*`` from; tests pass their
            own so that they never depend on the real process environment.
        :param preflight: checks that need the operating system (ports, journal).
        :param stderr: where warnings and, under twistd, a mistake are written.
        """
        super().__init__()
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._preflight = _check_with_global_reactor if preflight is None else preflight
        self._stderr = sys.stderr if stderr is None else stderr

    def parseOptions(self, options=None) -> None:
        """
        Parse, and under twistd report a mistake as one line and exit 1.

        twistd answers a :class:`usage.UsageError` from a subcommand with its whole
        usage text and a prefix made of its own arguments (``twistd -n:``), which buries
        the line that matters; so when twistd is the parent (it sets ``parent`` before
        parsing), the line is written here and the exit is ours.  Called directly, it
        raises :class:`usage.UsageError` with the same line minus the prefix.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            line = _option_mistake(e)
            if self.parent is None:
                raise usage.UsageError(line) from None
            self._stderr.write(PREFIX + line + "\n")
            self._stderr.flush()
            raise SystemExit(1) from None

    def parseArgs(self, *args: str) -> None:
        """Settings are options only; a stray word is most often a missing ``--``."""
        if args:
            raise usage.UsageError(
                f"{args[0]!r}: not an option; give settings as --key value, "
                "e.g. --bindport 8765 (see --help)"
            )

    def postOptions(self) -> None:
        """
        Load and validate the settings; warn of ``SOCKETDOCK_*`` variables that name
        no setting, without stopping.

        :raises usage.UsageError: for any configuration mistake, with one line
            ``<key>: <problem>; <fix>``.
        """
        for line in environ_warnings(self._environ):
            self._stderr.write(PREFIX + "warning: " + line + "\n")
        cli = {
            s.key: self[_option_name(s.key)]
            for s in SETTINGS
            if self[_option_name(s.key)] is not None
        }
        environ, ini = self._environ, self["config"]
        try:
            self["settings"] = config = load_config(cli, environ, ini)
            self._preflight(config)
            # Each faster path's start-up check, run once; tuning = required
            # stops here, with one line naming the piece.
            self["stack"] = choose_stack(config.tuning)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        # What SIGHUP re-reads: the same sources, read again.
        self["reload"] = lambda: load_config(cli, environ, ini)


def _option_mistake(error: usage.UsageError) -> str:
    """
    The error as ``<option>: <problem>; <fix>``: getopt's own words for an unknown
    or empty option (which usage.Options passes on as its context) name no fix.
    """
    cause = error.__context__
    if not isinstance(cause, getopt.GetoptError) or not cause.opt:
        return str(error)
    option = ("--" if len(cause.opt) > 1 else "-") + cause.opt
    if cause.msg.endswith("not recognized"):
        close = closest_key(cause.opt)
        fix = f"did you mean --{_option_name(close)}?" if close else "see --help for the options"
        return f"{option}: unknown option; {fix}"
    if cause.msg.endswith("requires argument"):
        return f"{option}: no value given; write {option} VALUE"
    return f"{option}: {cause.msg}; see --help for the options"


def preflight(config: Config, reactor) -> None:
    """Check endpoints, ports and the journal before twistd starts anything."""
    check_startable(config, reactor)
    if config.journal is not None:
        try:
            check_journal(config.journal)
        except JournalError as e:
            raise ConfigError("journal", str(e)) from None


def _check_with_global_reactor(config: Config) -> None:
    from twisted.internet import reactor

    preflight(config, reactor)


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
    config = options["settings"]
    # Under twistd (the parent of our options), its own --logfile is in argv.
    twistd_argv = sys.argv[1:] if getattr(options, "parent", None) is not None else None
    log_from_level(config.log_level, log_beginner, twistd_argv)
    raise_open_file_limit()
    refused: list[str] = []

    def must_not_run(line: str) -> None:
        # The line is logged already; the process stops and exits 1.
        refused.append(line)
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    reactor.callWhenRunning(exit_zero_on_stop_signals, reactor)
    reactor.callWhenRunning(
        exit_right_after_shutdown, reactor, os._exit, lambda: 1 if refused else 0
    )
    stack = options.get("stack") or choose_stack(config.tuning)
    if stack.tune_gc:
        reactor.callWhenRunning(tune_collector)
    # Under systemd's Type=notify (NOTIFY_SOCKET), READY/STOPPING/WATCHDOG.
    return make_service(
        config,
        reactor,
        stack,
        reload=options.get("reload"),
        must_not_run=must_not_run,
        notify=from_environ(os.environ),
    )


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

    # Where the notices owed are kept, and who hears of each connection:
    # a file (journal), or Redis through the cluster's node.
    cluster = None
    journal = None
    if config.cluster is not None:
        # Imported only here: without cluster, nothing needs Redis or its client.
        from socketdock.cluster.wiring import Cluster

        cluster = Cluster(config, reactor, urls, secrets)
    elif config.journal is not None:
        journal = Journal(config.journal, reactor, ThreadWriter(reactor))
    owed = cluster.journal if cluster is not None else journal

    # The registry, and the relay over it and the backend.
    registry = Registry(
        cluster.events if cluster is not None else NoEvents(),
        owed.note if owed is not None else None,
    )
    metrics = Metrics(tuning=stack.pieces, cluster=cluster.status if cluster is not None else None)
    backend, pool = make_backend(config, reactor, net, urls, metrics, stack, secrets)
    if cluster is not None:
        backend = cluster.backend(backend)
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
