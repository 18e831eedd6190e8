"""
The relay's domain: the registry of live connections, each connection's
ordered lane towards the backend, the backends, retries, the wire format and
the journal.  No Autobahn, no twisted.web, nothing from :mod:`socketdock.tuned`.
"""
