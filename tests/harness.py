"""
Start a real SocketDock in-process on loopback for end-to-end tests.

The instance is built by the same ``make_service`` the twistd plugin uses, on
the real reactor, and stopped (drained) in the test's cleanup.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SkipTest

from socketdock.assembly import make_service
from socketdock.config.endpoints import base_url_for, scheme_of
from socketdock.config.settings import Config, load_config
from socketdock.service import SocketDockService
from socketdock.tuning import PIECES, Stack


def refused_port(testcase) -> int:
    """
    A loopback TCP port that refuses connections for the rest of the test: a
    socket is bound to it without listening, so nothing else can take it (a port
    that was merely free a moment ago could be taken by the time it is used).
    """
    holder = socket.socket()
    testcase.addCleanup(holder.close)
    holder.bind(("127.0.0.1", 0))
    return holder.getsockname()[1]


@attrs.frozen
class RunningRelay:
    """A started instance: its settings, service and URLs."""

    config: Config
    service: SocketDockService
    port: int

    @property
    def base(self) -> str:
        """
        The callback API's base URL: ``externalhostandport``, or, as by default the
        listeners take port 0, the one learned from the bound callback-API listener.
        """
        if self.config.externalhostandport is not None:
            return self.config.externalhostandport
        name = "api_listen" if self.config.api_listen else "listen"
        api = self.service.addresses[name]
        return base_url_for(api.host, api.port, scheme_of(getattr(self.config, name)))

    @property
    def api_port(self) -> int:
        """The port of the separate callback-API listener (``api_listen``)."""
        return self.service.addresses["api_listen"].port

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


#: The one SOCKETDOCK_* variable the suite reads: CI sets SOCKETDOCK_TUNING=off
#: to run every test on the plain stack (daemon tests pass it on too).
TUNING_VARIABLE = "SOCKETDOCK_TUNING"


def tuning_environ() -> dict[str, str]:
    """``{"SOCKETDOCK_TUNING": ...}`` if this process has it set, else empty."""
    value = os.environ.get(TUNING_VARIABLE)
    return {} if value is None else {TUNING_VARIABLE: value}


def stack_with(*names: str) -> Stack:
    """
    A stack with the named faster paths forced on and the others off, for a
    test of those pieces; the test skips, naming the failed check, where a
    piece truly cannot run here.
    """
    pieces = {piece.name: piece for piece in PIECES}
    verdicts = {name: "off for this test" for name in pieces}
    for name in names:
        why = pieces[name].verdict({})
        if why != "on":
            raise SkipTest(f"the {name} piece cannot run here: {why}")
        verdicts[name] = "on"
    return Stack(verdicts)


def start_relay(
    testcase,
    reactor,
    stack: Stack | None = None,
    open_files: int | None = None,
    **settings: Any,
) -> RunningRelay:
    """
    Build and start an instance with ``settings`` (strings or values, as in
    the INI) on loopback; the cleanup stops it, draining.

    Listeners take port 0 (``bindport``, and ``api_listen`` given as ``"tcp:0"``
    or ``tcp:0:interface=127.0.0.1``): the OS picks a free port while binding, so no
    other process can take it first; the instance tells the ports it got.
    ``tuning`` follows SOCKETDOCK_TUNING unless ``settings`` name it; a
    ``stack`` (:func:`stack_with`) overrides both.  ``open_files`` stands in
    for the open-file limit (see ``make_service``).
    """
    cli: dict[str, str] = {"bindip": "127.0.0.1", "bindport": "0"}
    cli.update({k: _text(v) for k, v in settings.items()})
    config = load_config(cli, tuning_environ(), None)
    service = make_service(config, reactor, stack, open_files=open_files)
    service.startService()
    testcase.addCleanup(_stop, service)
    # A listener that is not TCP (unix:) has no port.
    return RunningRelay(config, service, getattr(service.addresses["listen"], "port", 0))


def _stop(service: SocketDockService) -> Deferred:
    if service.running:
        return service.stopService()
    return succeed(None)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
