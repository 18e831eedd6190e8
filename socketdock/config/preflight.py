"""
Checks that need the operating system, run while twistd parses options.

twistd prints a parse-time error as one clean line and exits 1; a failure
later, when the listeners start, comes out as a traceback (or, daemonized, as a
truncated message).  So what can be known before starting is checked here:
endpoint strings parse (Twisted's own parsers and endpoint plugins say which
types exist), TCP ports are free, and cluster mode's Redis client is
installed.  (The journal's own check is
:func:`socketdock.relay.journal.check_journal`; ``tap`` runs both.)
"""

from __future__ import annotations

import importlib.util
import socket

from twisted.internet import endpoints

from socketdock.config.endpoints import is_ipv6, tcp_address
from socketdock.config.settings import Config, ConfigError

__all__ = ["check_startable"]


def check_startable(config: Config, reactor) -> None:
    """
    Raise :class:`ConfigError` naming the key if a listener could not start: the key the
    operator set, so ``bindport`` when ``listen`` was derived from bindip/bindport.
    """
    listeners = [(config.listen_key, config.listen)]
    if config.api_listen is not None:
        listeners.append(("api_listen", config.api_listen))
    for key, description in listeners:
        try:
            endpoints.serverFromString(reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(
                key,
                f"{description!r} is not a Twisted endpoint string ({e}); "
                "see the README's endpoint examples",
            ) from None
        address = tcp_address(description)
        if address is not None:
            _check_port_free(key, *address)
    if config.cluster is not None and importlib.util.find_spec("txredisapi") is None:
        raise ConfigError(
            "cluster",
            "needs the txredisapi package, which is not installed; "
            "pip install '.[cluster]' from SocketDock's checkout (or txredisapi), or remove cluster",
        )


def _check_port_free(key: str, interface: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if is_ipv6(interface) else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As Twisted's listener will: an old connection in TIME_WAIT is no clash.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))
    except OSError as e:
        where = f"{interface or '*'}:{port}"
        raise ConfigError(
            key,
            f"cannot listen on {where} ({e.strerror}); "
            "choose another port or stop what is using it",
        ) from None
    finally:
        probe.close()
