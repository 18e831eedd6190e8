"""
The wire format towards the backend (SPEC §3): pure functions, no I/O.

Backends already in production (DIDComm mediators) parse these bodies, so the
field names and nesting marked *compat* in the SPEC must not change.  Every body
is compact UTF-8 JSON; additions are only ever new keys an old backend ignores.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence

import attrs

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def new_connection_id() -> str:
    """
    A connection id: 128 bits from the OS's CSPRNG as 32 lowercase hex digits.

    The id is the only credential that names a connection, so it must be
    unguessable.
    """
    return secrets.token_hex(16)


@attrs.frozen
class CallbackURLs:
    """
    Where the backend reaches one connection on this instance.

    :param base: ``externalhostandport`` as a normalised URL, no trailing slash.
    """

    base: str

    def send(self, connection_id: str) -> str:
        """URL of the ``send`` route for one connection."""
        return f"{self.base}/socket/{connection_id}/send"

    def disconnect(self, connection_id: str) -> str:
        """URL of the ``disconnect`` route for one connection."""
        return f"{self.base}/socket/{connection_id}/disconnect"


class LearnedCallbackURLs:
    """
    :class:`CallbackURLs` whose base is known only once the callback-API
    listener is bound, when it listens on port 0 and the OS picks the port.
    No connection can exist before then, so nothing asks earlier.
    """

    def __init__(self) -> None:
        self._urls: CallbackURLs | None = None

    def learn(self, base: str) -> None:
        """:param base: ``http://host:port`` of the bound listener."""
        self._urls = CallbackURLs(base)

    @property
    def base(self) -> str:
        if self._urls is None:
            raise RuntimeError("the callback-API listener is not bound yet")
        return self._urls.base

    def send(self, connection_id: str) -> str:
        return f"{self.base}/socket/{connection_id}/send"

    def disconnect(self, connection_id: str) -> str:
        return f"{self.base}/socket/{connection_id}/disconnect"


AnyCallbackURLs = CallbackURLs | LearnedCallbackURLs


def connect_body(
    urls: AnyCallbackURLs,
    connection_id: str,
    headers: Mapping[str, str],
    context: Mapping[str, str] | None = None,
) -> bytes:
    """
    Body of the connect notice, sent before the handshake is answered.

    :param headers: the upgrade request's headers, repeated ones joined by ``", "``.
    :param context: ``path``, ``query``, ``remote`` (SPEC §9), after ``headers``.
    """
    meta = {
        "connection_id": connection_id,
        "send": urls.send(connection_id),
        "disconnect": urls.disconnect(connection_id),
        "headers": dict(headers),
    }
    if context:
        meta.update(context)
    return _encode({"meta": meta}).encode("utf-8")


def message_body(
    urls: AnyCallbackURLs,
    connection_id: str,
    seq: int,
    payload: bytes,
    is_binary: bool,
    tags: Sequence[str] = (),
    state: str | None = None,
) -> bytes:
    """
    Body of one message POST (compat).

    A tagged connection's tags (SPEC §8) go last in ``meta``; an untagged
    connection's body has no ``tags`` key, byte for byte as before.

    A text frame's payload is already valid UTF-8 (Autobahn checks).  A binary
    frame that decodes as UTF-8 travels as a string with ``binary: true``, as
    the original did; any other binary frame is base64-encoded so that nothing
    is lost or altered on the way.
    """
    meta: dict[str, object] = {
        "connection_id": connection_id,
        "send": urls.send(connection_id),
        "disconnect": urls.disconnect(connection_id),
        "seq": seq,
    }
    if is_binary:
        meta["binary"] = True
        try:
            message = payload.decode("utf-8")
        except UnicodeDecodeError:
            meta["encoding"] = "base64"
            message = base64.b64encode(payload).decode("ascii")
    else:
        message = payload.decode("utf-8")
    if tags:
        meta["tags"] = list(tags)
    if state is not None:
        meta["state"] = json.loads(state)
    return _encode({"meta": meta, "message": message}).encode("utf-8")


def disconnect_body(
    connection_id: str,
    code: int | None,
    reason: str,
    initiator: str,
    recovered: bool = False,
    tags: Sequence[str] = (),
    state: str | None = None,
) -> bytes:
    """
    Body of the disconnect notice (compat): the id at the top level, as the
    original sent it, and the details in ``meta``.

    :param code: the close code, or ``None`` when the connection dropped
        without a close frame.
    :param initiator: ``client``, ``server`` or ``backend``.
    :param recovered: sent by a restarted instance on behalf of a crashed one.
    :param tags: those the connection carried when it stopped being live;
        no ``tags`` key when there were none.
    """
    meta: dict[str, object] = {
        "connection_id": connection_id,
        "code": code,
        "reason": reason,
        "initiator": initiator,
    }
    if recovered:
        meta["recovered"] = True
    if tags:
        meta["tags"] = list(tags)
    if state is not None:
        # The backend's own JSON (SPEC §9), as compact text; absent when never set.
        meta["state"] = json.loads(state)
    return _encode({"connection_id": connection_id, "meta": meta}).encode("utf-8")
