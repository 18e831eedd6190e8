"""
Times as the outside world reads them, the same in logs and in ``/status``.
"""

from datetime import datetime, timezone


def rfc3339(seconds: float) -> str:
    """A POSIX time (the reactor's or a log event's) as an RFC 3339 UTC string, milliseconds kept."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
