"""
The twistd plugin's entry points: :class:`Options` and :func:`makeService`.

This is the only module that reads the process environment; everything below it gets
a :class:`~socketdock.config.Config` through constructors.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.application.service import IService
from twisted.python import usage

from socketdock.config import SETTINGS, ConfigError, load_config

__all__ = ["Options", "makeService"]


def _option_name(key: str) -> str:
    return key.replace("_", "-")


class Options(usage.Options):
    """
    ``twistd socketdock`` options: ``--config`` plus one ``--key-with-dashes`` per
    setting.  After parsing, ``self["settings"]`` holds the validated
    :class:`~socketdock.config.Config`.
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

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """
        :param environ: the environment to read ``SOCKETDOCK_*`` from; tests pass their
            own so that they never depend on the real process environment.
        """
        super().__init__()
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

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
            self["settings"] = load_config(cli, self._environ, self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Mapping[str, Any], reactor: Any = None) -> IService:
    """
    Build the SocketDock service from parsed :class:`Options`.

    Filled in by the core: the settings layer only provides ``options["settings"]``.

    :param options: parsed options; ``options["settings"]`` is the Config.
    :param reactor: the reactor to use; None means the global one, resolved lazily.
    """
    raise NotImplementedError("makeService is provided by the SocketDock core")
