"""
The secrets in force now: the callback API's bearer tokens, the signing
secrets and the cluster's Redis password.

One :class:`Secrets` is shared by everything that checks or uses a secret,
and each reads it per request, so that :meth:`Secrets.replace` (on SIGHUP)
takes effect at the next request without touching a connection.  Several
tokens or secrets are how a rotation works without a flag day: any token
admits; the first secret signs and every one of them adds a signature.
Nothing here ever shows a value.  Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Secrets", "split_secrets"]


def split_secrets(text: str) -> tuple[str, ...]:
    """
    Several secrets in one value: separated by commas or line ends (a file
    may hold one per line), blanks around each and empty ones dropped.
    """
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


class Secrets:
    """
    :param api_tokens: any one admits a callback-API request; none: no token needed.
    :param signing_secrets: the first signs; the others add signatures during
        a rotation; none: requests are not signed.
    :param cluster_password: Redis's password, used at the next (re)connection.
    """

    def __init__(
        self,
        api_tokens: Sequence[str] = (),
        signing_secrets: Sequence[str] = (),
        cluster_password: str | None = None,
    ) -> None:
        self.api_tokens: tuple[bytes, ...] = tuple(t.encode("utf-8") for t in api_tokens)
        self.signing_keys: tuple[bytes, ...] = tuple(s.encode("utf-8") for s in signing_secrets)
        self.cluster_password = cluster_password

    def __repr__(self) -> str:
        return (
            f"<Secrets: {len(self.api_tokens)} api tokens, {len(self.signing_keys)} signing "
            f"secrets, cluster password {'set' if self.cluster_password else 'not set'}>"
        )

    def replace(self, new: Secrets) -> list[str]:
        """
        Take the values of ``new``.

        :returns: what changed, one phrase per setting, naming no value
            (``"api_token (2 tokens, were 1)"``); empty when nothing did.
        """
        changed = []
        if new.api_tokens != self.api_tokens:
            changed.append(_counted("api_token", "tokens", new.api_tokens, self.api_tokens))
        if new.signing_keys != self.signing_keys:
            changed.append(
                _counted("signing_secret", "secrets", new.signing_keys, self.signing_keys)
            )
        if new.cluster_password != self.cluster_password:
            changed.append("cluster password")
        self.api_tokens = new.api_tokens
        self.signing_keys = new.signing_keys
        self.cluster_password = new.cluster_password
        return changed


def _counted(key: str, what: str, new: tuple, old: tuple) -> str:
    noun = what if len(new) != 1 else what[:-1]
    return f"{key} ({len(new)} {noun}, were {len(old)})"
