"""
The backend's own state for a connection (SPEC §9), and what a recovered
notice needs to know of a connection it never saw.

A state is any JSON value the backend gives, kept as compact UTF-8 JSON text
of at most :data:`MAX_STATE` bytes; ``None`` means "never set" (a state of
``null`` is the text ``"null"``).  The *details* of a connection -- its tags
and its state -- are what the journal and the cluster keep beside its id, so
that a recovered disconnect notice carries what a live one does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

#: The most bytes a state may take as compact UTF-8 JSON.
MAX_STATE = 4096

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class InvalidState(ValueError):
    """
    A state SocketDock cannot keep.

    :param status: 413 (too large) or 400 (not JSON).
    """

    def __init__(self, why: str, status: int = 400) -> None:
        super().__init__(why)
        self.status = status


def encode_state(value: object) -> str:
    """
    ``value`` as compact JSON text, checked against :data:`MAX_STATE`.

    :raises InvalidState: (413) too large, (400) not encodable (a lone surrogate).
    """
    try:
        text = _compact(value)
        size = len(text.encode("utf-8"))
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
        raise InvalidState("state is not valid JSON text") from None
    if size > MAX_STATE:
        raise InvalidState(f"state is {size} bytes as compact JSON, over {MAX_STATE}", 413)
    return text


def details_text(tags: Sequence[str], state: str | None) -> str:
    """A connection's tags and state as one JSON object; ``""`` when it has neither."""
    if not tags and state is None:
        return ""
    details: dict[str, object] = {}
    if tags:
        details["tags"] = list(tags)
    text = _compact(details)
    if state is None:
        return text
    # The state is JSON text already: spliced in, not parsed again.
    return (text[:-1] + ("," if tags else "")) + '"state":' + state + "}"


def parse_details(text: str | bytes | None) -> tuple[tuple[str, ...], str | None]:
    """
    The tags and state of :func:`details_text` (nothing for an empty or
    unreadable record: the notice still goes out, without them).
    """
    if not text:
        return (), None
    try:
        details = json.loads(text)
    except ValueError:
        return (), None
    if not isinstance(details, dict):
        return (), None
    tags = details.get("tags", [])
    tags = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    state = _compact(details["state"]) if "state" in details else None
    return tags, state
