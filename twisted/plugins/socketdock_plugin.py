"""twistd plugin: ``twistd socketdock --config etc/socketdock.ini``."""

from twisted.application.service import ServiceMaker

SocketDock = ServiceMaker(
    "SocketDock",
    "socketdock.tap",
    "Relay WebSocket clients to an HTTP-only backend.",
    "socketdock",
)
