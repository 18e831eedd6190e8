"""
Faster paths beneath treq, twisted.web and Autobahn: an HTTP/1.1 agent and
server channel on httptools, batched TCP writes, Autobahn and treq patches,
garbage-collector settings.  Only :mod:`socketdock.tuning` applies them.

Each piece also carries a ``check_*`` function that :mod:`socketdock.tuning`
runs once at start: it looks for the library internals the piece leans on
and, where a differential makes sense, runs the piece beside the plain
library path on a small input.  A failed check raises :class:`CheckFailed`,
and only that piece falls back to the plain path.
"""


class CheckFailed(Exception):
    """A tuned piece's start-up check failed; the message says why, in one line."""


def require(condition: object, reason: str) -> None:
    """Raise :class:`CheckFailed` with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(reason)


def require_attributes(owner: object, names: tuple[str, ...], what: str) -> None:
    """Raise :class:`CheckFailed` naming the first of ``names`` that ``owner`` lacks."""
    for name in names:
        if not hasattr(owner, name):
            raise CheckFailed(f"{what} has no {name}")
