"""
systemd's readiness and watchdog notifications (``sd_notify(3)``), spoken
directly: one datagram per state on the unix socket ``$NOTIFY_SOCKET``, so
that a ``Type=notify`` unit is "started" only once every listener is bound,
shows "deactivating" as soon as the drain begins, and is restarted when the
reactor stops turning (``WatchdogSec=``).  It is a few lines, so no library.

Outside systemd (no ``NOTIFY_SOCKET``) there is no notifier at all.  A
notification that cannot be sent is logged once and otherwise ignored: the
relay never stops for its supervisor's sake.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_log = Logger()


def socket_address(name: str) -> str | bytes:
    """
    The address to send to for ``$NOTIFY_SOCKET``: a path, or for ``@name``
    the abstract socket ``\\0name`` (Linux).
    """
    if name.startswith("@"):
        return b"\0" + name[1:].encode("utf-8")
    return name


class Notifier:
    """
    Sends states to one notify socket.

    :param address: from :func:`socket_address`.
    """

    def __init__(self, address: str | bytes) -> None:
        self._address = address
        self._socket: socket.socket | None = None
        self._failed = False

    def send(self, state: str) -> None:
        """Send one ``KEY=value`` line (or several, newline-separated)."""
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(state.encode("utf-8"), self._address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                _log.warn(
                    "systemd notify socket {address!r}: {error}; notifications may be lost",
                    address=self._address,
                    error=e,
                )

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def from_environ(environ: Mapping[str, str], pid: int | None = None) -> SystemdNotify | None:
    """
    The notifications systemd asked for in ``environ``, or None outside
    ``Type=notify``.  ``WATCHDOG_USEC`` turns the watchdog on, unless
    ``WATCHDOG_PID`` names another process.

    :param pid: this process's id (tests pass their own).
    """
    name = environ.get("NOTIFY_SOCKET", "")
    if not name:
        return None
    interval = None
    usec = environ.get("WATCHDOG_USEC", "")
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
    if usec.isdigit() and int(usec) > 0 and mine:
        # Half the period, as sd_watchdog_enabled(3) advises.
        interval = int(usec) / 2_000_000
    return SystemdNotify(Notifier(socket_address(name)), interval)


class SystemdNotify(Service):
    """
    ``READY=1`` (:meth:`ready`, once every listener is bound), ``STOPPING=1``
    (:meth:`stopping`, when the drain starts), and while running
    ``WATCHDOG=1`` every ``interval`` seconds, from the reactor: a blocked
    reactor misses its pings and systemd restarts the process.

    :param interval: seconds between watchdog pings, or None for none.
    """

    def __init__(self, notifier: Notifier, interval: float | None, clock=None) -> None:
        self._notifier = notifier
        self.interval = interval
        self._clock = clock
        self._pinger: LoopingCall | None = None

    def ready(self, _: object = None) -> None:
        self._notifier.send("READY=1\nSTATUS=listening")

    def stopping(self) -> None:
        self._notifier.send("STOPPING=1\nSTATUS=draining")

    def startService(self) -> None:
        super().startService()
        if self.interval is not None:
            self._pinger = LoopingCall(self._notifier.send, "WATCHDOG=1")
            if self._clock is not None:
                self._pinger.clock = self._clock
            self._pinger.start(self.interval, now=True)

    def stopService(self):
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        self._pinger = None
        self._notifier.close()
        return super().stopService()
