"""
The client edge: the Autobahn protocol that adapts WebSocket frames to the
relay's :class:`~socketdock.relay.admission.Entry`, its factory and the
:class:`~socketdock.ws.hub.Hub` each connection is built with, and beside
them one module a job (the handshake and its gate, flow control, timers,
the upgrade resource, origin checks, ...).
"""
