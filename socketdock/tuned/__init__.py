"""
Faster paths beneath treq, twisted.web and Autobahn: an HTTP/1.1 agent and
server channel on httptools, batched TCP writes, Autobahn and treq patches,
garbage-collector settings.  Only :mod:`socketdock.tuning` applies them.
"""
