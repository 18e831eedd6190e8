"""
SocketDock: a WebSocket relay for backends that speak only HTTP.

Clients hold WebSockets to one of many SocketDock instances; every client message is
POSTed to the backend with the callback URLs of the instance that holds the client, and
the backend talks back by POSTing to those URLs.
"""

__version__ = "1.0.0"
