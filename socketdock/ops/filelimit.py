"""
The open-file limit: every client holds a descriptor, so use all we may.

Started from a shell, a process inherits a soft limit of 1024 on most Linux
systems while the hard limit is far higher; a relay left at 1024 stops
accepting clients at about a thousand.  Raising the soft limit to the hard one
is unprivileged; Go programs do the same at start (since Go 1.19).  The hard
limit stays the operator's (``LimitNOFILE``, ``ulimit -Hn``).
"""

from __future__ import annotations

import resource

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
