"""
The running instance: its listeners, and the order in which it stops.

A stop (SIGTERM, SIGINT) drains first, with the listeners still open so that
``/readyz`` can say 503 and backends can still reach ``send`` while queued
messages finish; only then do the listeners close (SPEC §6).
"""

from __future__ import annotations

import signal

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from socketdock.relay.session import Relay
from socketdock.tuning import Stack, engage


class SocketDockService(MultiService):
    """
    The relay's listeners plus the drain that runs before they stop.

    :param pool: the backend connection pool (anything with
        ``closeCachedConnections``), closed last so the process exits without
        waiting on idle keep-alive connections.
    """

    _log = Logger()

    def __init__(self, relay: Relay, pool, shutdown_timeout: float) -> None:
        super().__init__()
        self._relay = relay
        self._pool = pool
        self._shutdown_timeout = shutdown_timeout

    @property
    def relay(self) -> Relay:
        """The sessions this service drains (read-only; for tests and tools)."""
        return self._relay

    def stopService(self) -> "Deferred[None]":
        self._log.info(
            "draining: closing {count} connections, up to {timeout}s for the backend",
            count=len(self._relay.registry), timeout=self._shutdown_timeout,
        )
        d = self._relay.drain(self._shutdown_timeout)
        d.addCallback(self._drained)
        d.addCallback(lambda _: self._relay.abandon())
        d.addCallback(lambda _: MultiService.stopService(self))
        if self._pool is not None:
            d.addCallback(lambda _: self._pool.closeCachedConnections())
        return d

    def _drained(self, undelivered: int) -> None:
        if undelivered:
            self._log.warn(
                "stopped with {count} disconnect notices undelivered after {timeout}s",
                count=undelivered, timeout=self._shutdown_timeout,
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
        self._undo = None

    def startService(self) -> None:
        super().startService()
        self._undo = engage(self._stack)

    def stopService(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        return super().stopService()


def add_listener(parent: MultiService, endpoint, factory) -> StreamServerEndpointService:
    """
    Listen on ``endpoint`` while ``parent`` runs; a listen failure (port in
    use) stops start-up instead of being logged and ignored.
    """
    listener = StreamServerEndpointService(endpoint, factory)
    listener._raiseSynchronously = True
    listener.setServiceParent(parent)
    return listener


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
