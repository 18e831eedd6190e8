"""
What a closed connection's protocol must let go of at once, rather than
when the collector finally breaks its reference cycles.
"""

from __future__ import annotations

from typing import Any


def release_buffers(protocol: Any) -> None:
    """
    Drop what this connection buffered, both ways, now that it is gone.
    The protocol itself outlives the connection in reference cycles
    (its transport, timers, Deferreds) until the collector runs, which
    with the tuned collector can be long after: its buffers must not
    (issue 21: 2.5 GB of unsent frames stayed after every client left).
    """
    protocol.data = b""
    protocol.send_queue.clear()
    # Autobahn sets these to None between messages and frames too.
    protocol.message_data = None
    protocol.frame_data = None
    protocol._early = None
    # Reached by attribute: the wrappers (TLS, PROXY) type it only as ITransport.
    transport: Any = protocol.transport
    while transport is not None:
        # A TCP transport's write buffer (twisted.internet.abstract) and
        # a TLS transport's buffer of what it could not encrypt yet.
        if hasattr(transport, "dataBuffer"):
            transport.dataBuffer = b""
            transport.offset = 0
            transport._tempDataBuffer = []
            transport._tempDataLen = 0
        if hasattr(transport, "_appSendBuffer"):
            transport._appSendBuffer = []
        transport = getattr(transport, "transport", None)
