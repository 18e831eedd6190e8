"""
The rules a tag obeys (SPEC §8), in one place for the connect answer, the
callback API's bodies and its paths.

A tag is 1-200 bytes of UTF-8 with no control characters; a connection
carries at most 64.  Every complaint is one line, fit for a 400 answer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from socketdock.relay.reach import InvalidTags

MAX_TAG_BYTES = 200
MAX_TAGS = 64


def check_tag(tag: object) -> str:
    """
    The tag itself if it obeys the rules.

    :raises InvalidTags: naming the rule it breaks.
    """
    if not isinstance(tag, str):
        raise InvalidTags("a tag must be a string")
    try:
        size = len(tag.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, from JSON's \\ud800
        raise InvalidTags("a tag must be valid UTF-8") from None
    if not 1 <= size <= MAX_TAG_BYTES:
        raise InvalidTags(f"a tag must be 1-{MAX_TAG_BYTES} bytes of UTF-8")
    if any(unicodedata.category(c) == "Cc" for c in tag):
        raise InvalidTags("a tag must not contain control characters")
    return tag


def tag_from_path(segment: bytes) -> str:
    """
    A tag named by one URL path segment, already percent-decoded by
    twisted.web (which splits the path before decoding, so ``%2F`` stays in
    the segment).

    :raises InvalidTags: not UTF-8, or against the rules.
    """
    try:
        tag = segment.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTags("a tag must be valid UTF-8") from None
    return check_tag(tag)


def check_tag_list(value: object, what: str) -> tuple[str, ...]:
    """
    A JSON list of tags, checked, without repeats, in first-seen order.

    :param what: names the list in complaints (``"tags"``, ``"add"``).
    :raises InvalidTags: not a list, a bad tag, or more than :data:`MAX_TAGS`.
    """
    if not isinstance(value, list):
        raise InvalidTags(f"{what} must be a list of strings")
    tags = tuple(dict.fromkeys(check_tag(t) for t in value))
    if len(tags) > MAX_TAGS:
        raise InvalidTags(f"a connection carries at most {MAX_TAGS} tags")
    return tags


def merged(now: Iterable[str], add: Iterable[str], remove: Iterable[str]) -> tuple[str, ...]:
    """
    ``now`` without ``remove``, then with ``add``; the order of first addition kept.

    :raises InvalidTags: when the result passes :data:`MAX_TAGS`.
    """
    gone = set(remove)
    result = dict.fromkeys(t for t in now if t not in gone)
    result.update(dict.fromkeys(add))
    if len(result) > MAX_TAGS:
        raise InvalidTags(f"a connection carries at most {MAX_TAGS} tags")
    return tuple(result)
