"""
An ACA-Py inbound transport that serves the backend side of SocketDock's
wire format.

Load it with ``--inbound-transport socketdock_acapy.transport HOST PORT``.
This package's top level imports nothing from ACA-Py, so the wire-format
helpers in :mod:`socketdock_acapy.wire` work (and are tested) without it.
"""

__version__ = "0.1.0"
