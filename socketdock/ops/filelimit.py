"""
The open-file limit: every client holds a descriptor, so use all we may.

Started from a shell, a process inherits a soft limit of 1024 on most Linux
systems while the hard limit is far higher; a relay left at 1024 stops
accepting clients at about a thousand.  Raising the soft limit to the hard one
is unprivileged; Go programs do the same at start (since Go 1.19).  The hard
limit stays the operator's (``LimitNOFILE``, ``ulimit -Hn``).

Whatever the limit, the public listener must not take every descriptor: the
callback API and ``/healthz`` need some to keep answering while clients (or
idle sockets) fill it.  :func:`connection_budget` is what the public listener
may hold; :class:`ListenerCap` holds it to that.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from twisted.logger import Logger

_log = Logger()


def raise_open_file_limit(rlimits=resource) -> tuple[int, int]:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit, and log the limit
    the process runs with.

    :param rlimits: the ``resource`` module (tests pass a stand-in).
    :return: the soft limit before and after.
    """
    soft, hard = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)
    if soft == hard:
        _log.info("open-file limit: {limit}", limit=soft)
        return soft, soft
    try:
        rlimits.setrlimit(rlimits.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        # An unlimited hard limit (some BSDs) cannot be the soft one.
        _log.warn("open-file limit left at {soft}: {error}", soft=soft, error=e)
        return soft, soft
    _log.info(
        "open-file limit raised from {before} to {after}, the hard limit", before=soft, after=hard
    )
    return soft, hard


#: Descriptors kept back from the public listener besides the backend pool's:
#: the callback-API listener and its clients (``/healthz`` probes, the
#: backend's sends), log files, the journal, Redis, the listening sockets.
RESERVED = 64

#: The fewest public connections a derived limit allows, however low the
#: open-file limit.
MINIMUM_BUDGET = 16


def open_file_limit(rlimits=resource) -> int:
    """The soft ``RLIMIT_NOFILE`` now (after :func:`raise_open_file_limit`)."""
    soft, _ = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)
    return soft if soft != rlimits.RLIM_INFINITY else 1 << 20


def connection_budget(open_files: int, backend_concurrency: int) -> int:
    """
    Public connections (WebSocket clients and not yet upgraded HTTP
    connections together) the process can hold and still have descriptors
    for the backend pool (one per ``backend_concurrency``) and
    :data:`RESERVED` others.
    """
    return max(MINIMUM_BUDGET, open_files - backend_concurrency - RESERVED)


class ListenerCap:
    """
    The connections one listener may hold open at once.

    :meth:`take` is asked at each accept; the callable it returns gives the
    place back, once, when that connection ends (whoever holds it then: the
    HTTP channel, or the WebSocket protocol it became).

    :param limit: connections held at most.
    :param name: the listener's setting (``listen``), for the log.
    :param refused: called for each connection refused (the metric).
    """

    _log = Logger()

    def __init__(
        self, limit: int, name: str = "listen", refused: Callable[[], None] = lambda: None
    ) -> None:
        self.limit = limit
        self.open = 0
        self._name = name
        self._full = False
        self._refused = refused

    def take(self) -> Callable[[], None] | None:
        """A place for one more connection, as its release; None when full."""
        if self.open >= self.limit:
            self._refused()
            if not self._full:
                self._full = True
                self._log.warn(
                    "{name}: {limit} connections open, the most the open-file limit leaves "
                    "room for; refusing new ones (503) until some close",
                    name=self._name,
                    limit=self.limit,
                )
            return None
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            if self._full and self.open < self.limit * 0.9:
                self._full = False
                self._log.info(
                    "{name}: accepting connections again ({open} open)",
                    name=self._name,
                    open=self.open,
                )

        return release


def no_release() -> None:
    """The release of a connection that holds no place under a cap."""


def hand_over(holder: object) -> Callable[[], None]:
    """
    The release ``holder`` (an HTTP channel) keeps in its ``release``
    attribute, taken from it for the protocol its connection goes to
    (:func:`no_release` when it has none).
    """
    release = getattr(holder, "release", no_release)
    if release is not no_release:
        holder.release = no_release  # type: ignore[attr-defined]  # a counted channel's
    return release
