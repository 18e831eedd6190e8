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

from socketdock.config.settings import Config, load_config
from socketdock.service import SocketDockService
from socketdock.tap import make_service


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.frozen
class RunningRelay:
    """A started instance: its settings, service and URLs."""

    config: Config
    service: SocketDockService
    port: int

    @property
    def base(self) -> str:
        """The callback API's base URL (``externalhostandport``)."""
        return self.config.externalhostandport

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


#: The one SOCKETDOCK_* variable the suite reads: CI sets SOCKETDOCK_TUNING=off
#: to run every test on the plain stack (daemon tests pass it on too).
TUNING_VARIABLE = "SOCKETDOCK_TUNING"


def tuning_environ() -> dict[str, str]:
    """``{"SOCKETDOCK_TUNING": ...}`` if this process has it set, else empty."""
    value = os.environ.get(TUNING_VARIABLE)
    return {} if value is None else {TUNING_VARIABLE: value}


def start_relay(testcase, reactor, **settings: Any) -> RunningRelay:
    """
    Build and start an instance with ``settings`` (strings or values, as in
    the INI) on a free loopback port; the cleanup stops it, draining.
    ``tuning`` follows SOCKETDOCK_TUNING unless ``settings`` name it.
    """
    port = free_port()
    cli: dict[str, str] = {"bindip": "127.0.0.1", "bindport": str(port)}
    cli.update({k: _text(v) for k, v in settings.items()})
    config = load_config(cli, tuning_environ(), None)
    service = make_service(config, reactor)
    service.startService()
    testcase.addCleanup(_stop, service)
    return RunningRelay(config, service, port)


def _stop(service: SocketDockService) -> Deferred:
    if service.running:
        return service.stopService()
    return succeed(None)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
