"""
The transport's settings: ACA-Py's own plugin configuration first (the
``socketdock`` section of ``--plugin-config`` YAML, or ``-o
socketdock.<key>=<value>``), then the ``SOCKETDOCK_<KEY>`` environment
variables, so one ACA-Py command line (or one YAML file) says everything.
No ACA-Py import: tested anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from .wire import parse_trusted_urls

#: The section of ACA-Py's plugin configuration this transport reads.
SECTION = "socketdock"
#: The keys it knows (each also ``SOCKETDOCK_<KEY>`` in the environment).
KEYS = ("trusted_urls", "signing_secret", "api_token", "send_timeout")


@dataclass(frozen=True)
class Settings:
    trusted_urls: tuple[str, ...] = ()
    signing_secret: Optional[str] = None
    api_token: Optional[str] = None
    send_timeout: float = 10.0
    #: One line saying why the transport cannot start, or None.
    problem: Optional[str] = None


def _where(key: str, from_plugin: bool) -> str:
    return f"{SECTION}.{key}" if from_plugin else f"SOCKETDOCK_{key.upper()}"


def read_settings(plugin_config: Optional[Mapping[str, Any]], environ: Mapping[str, str]) -> Settings:
    """
    The settings from ``plugin_config`` (ACA-Py's ``plugin_config`` setting,
    the whole mapping) and ``environ``; a key in the plugin configuration
    wins over its environment variable.
    """
    section = (plugin_config or {}).get(SECTION) or {}
    if not isinstance(section, Mapping):
        return Settings(problem=f"plugin configuration {SECTION!r} is not a mapping of settings")
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        return Settings(
            problem=f"unknown plugin configuration {SECTION}.{unknown[0]} "
            f"(known: {', '.join(KEYS)})"
        )

    def get(key: str) -> tuple[Any, bool]:
        if section.get(key) not in (None, ""):
            return section[key], True
        return environ.get(f"SOCKETDOCK_{key.upper()}") or None, False

    urls, urls_from_plugin = get("trusted_urls")
    if isinstance(urls, (list, tuple)):
        urls = ",".join(str(u) for u in urls)
    try:
        trusted = parse_trusted_urls(None if urls is None else str(urls))
    except ValueError as e:
        return Settings(problem=f"{_where('trusted_urls', urls_from_plugin)}: {e}")
    if not trusted:
        return Settings(
            problem=(
                "no trusted SocketDock URLs: name the SocketDock instances replies may go to, "
                "e.g. -o socketdock.trusted_urls=http://10.0.0.5:8765 "
                "(or SOCKETDOCK_TRUSTED_URLS)"
            )
        )
    timeout, timeout_from_plugin = get("send_timeout")
    try:
        send_timeout = float(timeout) if timeout is not None else 10.0
        if not send_timeout > 0:
            raise ValueError
    except (TypeError, ValueError):
        return Settings(
            problem=f"{_where('send_timeout', timeout_from_plugin)}: {timeout!r} is not a "
            "positive number of seconds"
        )
    secret, _ = get("signing_secret")
    token, _ = get("api_token")
    return Settings(
        trusted_urls=trusted,
        signing_secret=None if secret is None else str(secret),
        api_token=None if token is None else str(token),
        send_timeout=send_timeout,
    )
