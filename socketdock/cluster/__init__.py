"""
Cluster mode (SPEC §8): instances that share one Redis.

A layer above :mod:`socketdock.relay` and below the API and the wiring: it
implements the relay's :class:`socketdock.relay.reach.IReach` for a whole cluster.
Only imported when the ``cluster`` setting is given, so that an instance
without it needs neither Redis nor its client library.
"""
