"""
What a client connection tells the operator when it ends: one info line per
client (docs/operating.rst), and the refusals metric.

A refused handshake gets one bounded line saying why, whoever refused it
(the protocol, Autobahn's parser, or the upgrade resource before either);
an opened connection gets one line when it goes.  Worded here once so that
every refusal reads the same; the caller passes its own logger, so each
line keeps its namespace and source.
"""

from __future__ import annotations

from twisted.logger import Logger

from socketdock.ops.metrics import Metrics


def handshake_refused(
    log: Logger,
    metrics: Metrics,
    peer: str | None,
    status: int,
    label: str,
    why: str,
    connection_id: str = "",
) -> None:
    """
    Count a refused handshake and log it.

    :param label: the metric's ``reason`` (one of
        :data:`~socketdock.ws.refusal.REASONS`).
    :param why: already :func:`~socketdock.ws.refusal.printable`.
    :param connection_id: set once the relay gave the client an id.
    """
    metrics.handshake_refused(status, label)
    if connection_id:
        log.info(
            "handshake of {connection_id} from {peer} refused: {status} {why}",
            connection_id=connection_id,
            peer=peer,
            status=status,
            why=why,
        )
    else:
        log.info("handshake from {peer} refused: {status} {why}", peer=peer, status=status, why=why)


def connection_closed(
    log: Logger,
    connection_id: str,
    peer: str | None,
    code: int | None,
    initiator: str,
    seconds: float,
) -> None:
    """Log an opened connection's end: its code, who closed, how long it lived."""
    log.info(
        "client {connection_id} from {peer} closed after {seconds:.1f}s: "
        "code {code}, initiator {initiator}",
        connection_id=connection_id,
        peer=peer,
        code=code,
        initiator=initiator,
        seconds=seconds,
    )
