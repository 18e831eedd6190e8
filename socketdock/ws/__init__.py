"""
The client edge: the Autobahn protocol and factory that adapt WebSocket
frames to the relay, the upgrade resource, origin checks and keepalive.
"""
