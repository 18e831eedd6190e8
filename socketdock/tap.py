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

from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from socketdock.api.site import Root, make_api_children, make_health, make_site, warn_if_exposed
from socketdock.config.endpoints import base_url_for, scheme_of
from socketdock.config.preflight import check_startable
from socketdock.config.settings import (
    SETTINGS,
    Config,
    ConfigError,
    closest_key,
    environ_warnings,
    load_config,
    max_response_body,
)
from socketdock.ops.filelimit import raise_open_file_limit
from socketdock.ops.jsonlog import log_from_level
from socketdock.ops.metrics import Metrics
from socketdock.relay.backend import HTTPBackend, LoopbackBackend
from socketdock.relay.httpclient import BackendClient, make_tls_policy
from socketdock.relay.journal import Journal, JournalService, ThreadWriter, check_journal
from socketdock.relay.localreach import LocalReach
from socketdock.relay.registry import Registry
from socketdock.relay.retry import Backoff
from socketdock.relay.session import Relay
from socketdock.relay.wire import AnyCallbackURLs, CallbackURLs, LearnedCallbackURLs
from socketdock.service import (
    SocketDockService,
    TuningService,
    add_listener,
    exit_right_after_shutdown,
    exit_zero_on_stop_signals,
)
from socketdock.tuned.collector import tune_collector
from socketdock.tuning import Stack, choose_stack, installed_versions, make_http_client
from socketdock.ws.protocol import make_ws_factory
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
        try:
            self["settings"] = config = load_config(cli, self._environ, self["config"])
            self._preflight(config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


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
        check_journal(config.journal)


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
    log_from_level(config.log_level, log_beginner)
    raise_open_file_limit()
    reactor.callWhenRunning(exit_zero_on_stop_signals, reactor)
    reactor.callWhenRunning(exit_right_after_shutdown, reactor)
    stack = choose_stack(config.tuning, installed_versions())
    if stack.tune_gc:
        reactor.callWhenRunning(tune_collector)
    return make_service(config, reactor, stack)


def make_backend(
    config: Config, reactor, net, urls: AnyCallbackURLs, metrics: Metrics, stack: Stack
):
    """
    The backend the settings name, and the connection pool to close at stop
    (None for loopback).  Backend connections are made through ``net``.
    """
    if config.backend != "http":
        return LoopbackBackend(), None
    pool = stack.make_pool(reactor, config.backend_concurrency)
    response_limit = max_response_body(config.max_message_size)
    client = BackendClient(
        make_http_client(stack, net, pool, make_tls_policy(config.backend_ca), response_limit),
        reactor,
        config.backend_timeout,
        config.signing_secret,
        config.backend_concurrency,
        metrics.backend_request,
        response_limit,
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


def make_service(config: Config, reactor, stack: Stack | None = None) -> SocketDockService:
    """
    Wire the collaborators bottom-up and attach their listeners.

    :param stack: plain or tuned (:mod:`socketdock.tuning`); by default chosen
        from ``config.tuning`` and the installed library versions.
    """
    if stack is None:
        stack = choose_stack(config.tuning, installed_versions())
    if stack.reason:
        _log.warn("{reason}", reason=stack.reason)
    urls = (
        LearnedCallbackURLs()
        if config.externalhostandport is None
        else CallbackURLs(config.externalhostandport)
    )
    # Built below; the callbacks here reach it only once it exists.
    relay: Relay
    cluster = None
    if config.cluster is not None:
        # Imported only here: without cluster, nothing needs Redis or its client.
        from socketdock.cluster.wiring import Cluster

        cluster = Cluster(
            config, reactor, urls, recover=lambda ids, details: relay.recover(ids, details)
        )

    # The journal (or the cluster) keeps each connection's tags and state for its notice.
    def noted(connection_id: str, details: str) -> None:
        relay.note(connection_id, details)

    registry = Registry(cluster.events, noted) if cluster is not None else Registry(noted=noted)
    # Listeners and backend connections use it; timers and the rest use the reactor.
    net = stack.network(reactor)
    # The gauge reads the relay built below, only when scraped.
    metrics = Metrics(
        active=registry.__len__,
        queued=lambda: relay.queued(),
        tags=registry.tag_count,
        cluster=cluster.status if cluster is not None else None,
    )
    backend, pool = make_backend(config, reactor, net, urls, metrics, stack)
    journal = None
    if config.journal is not None:
        journal = Journal(config.journal, reactor, ThreadWriter(reactor))
    if cluster is not None:
        backend = cluster.backend(backend)
    # In cluster mode the notices owed are kept in Redis instead.
    relay = Relay(
        backend,
        registry,
        metrics,
        reactor,
        config.queue_limit,
        cluster.journal if cluster is not None else journal,
    )

    ws_factory = make_ws_factory(config, relay, reactor, stack.ws_specialise)
    upgrade = WebSocketUpgrade(ws_factory)
    health = make_health(relay)
    # Within one instance; cluster mode swaps in an IReach that asks the others.
    reach = (
        LocalReach(registry, lambda: urls.base) if cluster is None else cluster.make_reach(registry)
    )
    api_children = make_api_children(
        registry,
        metrics,
        reactor,
        config.max_message_size,
        reach,
        anywhere=cluster is not None,
        instance=lambda: urls.base,
    )

    service = SocketDockService(relay, pool, config.shutdown_timeout)
    # First in, last out: the patches outlive every connection.
    TuningService(stack).setServiceParent(service)
    max_body = config.max_message_size

    def make_site_for(root: Root):
        return make_site(root, reactor, max_body, stack.channel)

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
        _listen(service, net, "listen", config.listen, make_site_for(front), urls)
    else:
        front = Root((config.wspath, upgrade), None, health, None)
        back = Root(None, api_children, health, config.api_token)
        _listen(service, net, "listen", config.listen, make_site_for(front), None)
        _listen(service, net, "api_listen", config.api_listen, make_site_for(back), urls)
    warn_if_exposed(config.api_listen or config.listen, config.api_token)
    return service


def _listen(service: SocketDockService, net, name: str, description: str, site, urls) -> None:
    """
    Attach one listener; once bound, record its address on ``service`` and, if it
    serves the callback API (``urls`` given) and the base URL is to be learned
    (port 0), teach ``urls``.
    """

    def bound(address) -> None:
        service.addresses[name] = address
        if isinstance(urls, LearnedCallbackURLs):
            urls.learn(base_url_for(address.host, address.port, scheme_of(description)))

    add_listener(service, serverFromString(net, description), site, name, bound)
