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

from twisted.internet.error import ReactorNotRunning
from twisted.python import usage

from socketdock.assembly import make_service
from socketdock.config.preflight import check_startable
from socketdock.config.settings import (
    SETTINGS,
    Config,
    ConfigError,
    closest_key,
    environ_warnings,
    load_config,
)
from socketdock.ops.filelimit import raise_open_file_limit
from socketdock.ops.jsonlog import log_from_level
from socketdock.ops.sdnotify import from_environ
from socketdock.relay.journal import JournalError, check_journal
from socketdock.service import (
    SocketDockService,
    exit_right_after_shutdown,
    exit_zero_on_stop_signals,
)
from socketdock.tuned.collector import tune_collector
from socketdock.tuning import choose_stack

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
