"""
The settings in force as one start-up line: what an operator checks first
(where it listens, which backend, journal or cluster, limits, which secrets
are set), with every secret redacted.  Pure: text from a :class:`Config`.
"""

from __future__ import annotations

from socketdock.config.settings import Config

__all__ = ["summary", "summary_line"]


def summary(config: Config) -> dict[str, str]:
    """The summary's fields, each a short text naming no secret."""
    return {
        "listeners": _listeners(config),
        "backend": _backend(config),
        "journal": config.journal or "off",
        # str() of the address shows a password as ***.
        "cluster": str(config.cluster) if config.cluster is not None else "off",
        "tuning": config.tuning,
        "limits": _limits(config),
        "secrets": _secrets(config),
    }


def summary_line(fields: dict[str, str]) -> str:
    """The fields as one line: ``listeners ...; backend ...; ...``."""
    return "; ".join(f"{name} {text}" for name, text in fields.items())


def _listeners(config: Config) -> str:
    api_at = config.externalhostandport or "the port bound"
    if config.api_listen is None:
        return f"listen {config.listen} (WebSocket {config.wspath}, callback API at {api_at})"
    return (
        f"listen {config.listen} (WebSocket {config.wspath}), "
        f"api_listen {config.api_listen} (callback API at {api_at})"
    )


def _backend(config: Config) -> str:
    if config.backend != "http":
        return config.backend
    urls = [f"message {config.messageuri}"]
    if config.connecturi:
        urls.append(f"connect {config.connecturi}")
    if config.disconnecturi:
        urls.append(f"disconnect {config.disconnecturi}")
    return "http (" + ", ".join(urls) + ")"


def _seconds(value: float) -> str:
    return f"{value:g}s" if value else "off"


def _limits(config: Config) -> str:
    return ", ".join(
        [
            f"max_connections {config.max_connections or 'unlimited'}",
            f"max_message_size {config.max_message_size}",
            f"queue_limit {config.queue_limit}",
            f"backend_concurrency {config.backend_concurrency}",
            f"backend_timeout {_seconds(config.backend_timeout)}",
            f"backend_retries {config.backend_retries}",
            f"ping {_seconds(config.ping_interval)}/{_seconds(config.ping_timeout)}",
            f"max_lifetime {_seconds(config.max_lifetime)}",
            f"tag_deadline {_seconds(config.tag_deadline)}",
            f"shutdown_timeout {_seconds(config.shutdown_timeout)}",
        ]
    )


def _secrets(config: Config) -> str:
    def counted(key: str, values: tuple[str, ...], path: str | None, noun: str) -> str:
        if not values:
            return f"{key} not set"
        where = f" from {path}" if path else ""
        return f"{key} set ({len(values)} {noun if len(values) == 1 else noun + 's'}{where})"

    parts = [
        counted("api_token", config.api_tokens, config.api_token_file, "token"),
        counted("signing_secret", config.signing_secrets, config.signing_secret_file, "secret"),
    ]
    if config.cluster is not None:
        password = config.cluster.password is not None
        where = f" from {config.cluster_password_file}" if config.cluster_password_file else ""
        parts.append(f"cluster password {'set' + where if password else 'not set'}")
    return ", ".join(parts)
