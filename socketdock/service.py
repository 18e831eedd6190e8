"""
The running instance: its listeners, and the order in which it stops.

A stop (SIGTERM, SIGINT) drains first, with the listeners still open so that
``/readyz`` can say 503 and backends can still reach ``send`` while queued
messages finish; only then do the listeners close (SPEC §6).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from socketdock.config.endpoints import host_and_port
from socketdock.ops.sdnotify import SystemdNotify
from socketdock.relay.session import Relay
from socketdock.tuning import Stack, engage


class SocketDockService(MultiService):
    """
    The relay's listeners plus the drain that runs before they stop.

    :param pool: the backend connection pool (anything with
        ``closeCachedConnections``), closed last so the process exits without
        waiting on idle keep-alive connections.
    :param notify: systemd's notifications, when it asked for them: ready once
        every listener is bound, stopping when the drain starts, and the
        watchdog's pings from start to the very end of the stop.
    """

    _log = Logger()

    def __init__(
        self, relay: Relay, pool, shutdown_timeout: float, notify: SystemdNotify | None = None
    ) -> None:
        super().__init__()
        self._relay = relay
        self._pool = pool
        self._shutdown_timeout = shutdown_timeout
        self._notify = notify
        #: The bound address of each listener by setting name (``listen``,
        #: ``api_listen``), filled in as they start; for tests and tools.
        self.addresses: dict[str, Any] = {}
        self._unbound: set[str] = set()
        #: Fires once every listener named by :meth:`expect` is bound.
        self.listening: Deferred[None] = Deferred()
        if notify is not None:
            # First in, last out: it pings through the whole drain.
            notify.setServiceParent(self)
            self.listening.addCallback(notify.ready)

    def expect(self, name: str) -> None:
        """Count the listener ``name`` among those :attr:`listening` waits for."""
        self._unbound.add(name)

    def bound(self, name: str, address: Any) -> None:
        """The listener ``name`` is bound at ``address``."""
        self.addresses[name] = address
        self._unbound.discard(name)
        if not self._unbound and not self.listening.called:
            self.listening.callback(None)

    @property
    def relay(self) -> Relay:
        """The sessions this service drains (read-only; for tests and tools)."""
        return self._relay

    def stopService(self) -> Deferred[None]:
        if self._notify is not None:
            self._notify.stopping()
        self._log.info(
            "draining: closing {count} connections, up to {timeout}s for the backend",
            count=len(self._relay.registry),
            timeout=self._shutdown_timeout,
        )
        d: Deferred[Any] = self._relay.drain(self._shutdown_timeout)
        d.addCallback(self._drained)
        d.addCallback(lambda _: self._relay.abandon())
        d.addCallback(lambda _: MultiService.stopService(self))
        pool = self._pool
        if pool is not None:
            d.addCallback(lambda _: pool.closeCachedConnections())
        return d

    def _drained(self, undelivered: int) -> None:
        if undelivered:
            self._log.warn(
                "stopped with {count} disconnect notices undelivered after {timeout}s",
                count=undelivered,
                timeout=self._shutdown_timeout,
            )
        else:
            self._log.info("drained: every queued message and notice delivered")


class TuningService(Service):
    """
    Holds a stack's process-wide patches (:func:`socketdock.tuning.engage`)
    for as long as it runs: added first, it starts before the listeners and
    stops after them, and a stopped instance leaves the libraries as it
    found them.
    """

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._undo: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self._undo = engage(self._stack)

    def stopService(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        return super().stopService()


def add_listener(
    parent: MultiService,
    endpoint,
    factory,
    name: str = "listen",
    on_bound: Callable[[Any], None] | None = None,
) -> StreamServerEndpointService:
    """
    Listen on ``endpoint`` while ``parent`` runs; a listen failure (port in
    use) stops start-up instead of being logged and ignored.  Once bound, one
    info line names the listener and its address (the port the OS picked, for
    port 0), and ``on_bound`` gets the address.

    :param name: the setting the listener comes from, ``listen`` or ``api_listen``.
    """
    listener = StreamServerEndpointService(_Announcing(endpoint, name, on_bound), factory)
    listener._raiseSynchronously = True
    listener.setServiceParent(parent)
    return listener


@implementer(IStreamServerEndpoint)
class _Announcing:
    """An endpoint that says where it listens once bound."""

    _log = Logger()

    def __init__(self, endpoint, name: str, on_bound: Callable[[Any], None] | None) -> None:
        self._endpoint = endpoint
        self._name = name
        self._on_bound = on_bound

    def listen(self, factory) -> Deferred:
        return self._endpoint.listen(factory).addCallback(self._bound)

    def _bound(self, port):
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        if number is None:
            where = str(address)
        else:
            where = host_and_port(str(host), number)
        self._log.info("{name}: listening on {where}", name=self._name, where=where)
        if self._on_bound is not None:
            self._on_bound(address)
        return port


def exit_zero_on_stop_signals(reactor) -> None:
    """
    Make SIGTERM and SIGINT stop the reactor without twistd re-raising the
    signal afterwards: twistd would end a clean, drained stop by killing
    itself with that signal (exit status 143), where SPEC §6 wants 0.  Call
    once the reactor runs, after it installed its own handlers.
    """
    log = Logger()

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # a second signal while the drain is under way

    def handler(signum: int, frame: object) -> None:
        log.info("Received {signal}, shutting down.", signal=signal.Signals(signum).name)
        reactor.callFromThread(stop)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)


def exit_right_after_shutdown(
    reactor, exit=os._exit, status: Callable[[], int] | None = None
) -> None:
    """
    End the process as soon as twistd has removed its pidfile after a
    completed shutdown.

    twistd removes the pidfile once the reactor has stopped, that is after
    the drain and after the thread pools were joined; but then the
    interpreter tears itself down, freeing every module and object one by
    one (0.5 s after a stop with 8,000 connections here, seconds for a big
    heap on a busy machine), and a supervisor that waits on the pidfile
    starts a second copy over this one meanwhile.  Nothing left by then
    needs that teardown: logs are flushed as written, the journal is closed.
    So once the reactor's shutdown has finished, an exit handler is
    registered (it runs first, as the last registered) that flushes the
    standard streams and exits 0 at once.  Call once the reactor runs.

    :param exit: what ends the process (a fake in tests).
    :param status: the exit status, asked at the exit (0 if not given): 1
        after a stop the instance made itself because it must not run.
    """
    args = (_exit_now, exit) if status is None else (_exit_now, exit, status)
    reactor.addSystemEventTrigger("after", "shutdown", atexit.register, *args)


def _exit_now(exit, status: Callable[[], int] = lambda: 0) -> None:
    if getattr(sys, "last_value", None) is not None:
        return  # an uncaught error: let Python report it and exit non-zero
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    exit(status())
