"""Values of the backend's FETCH responses as the front uses them (sans-IO).

``* n FETCH (UID 7 FLAGS (\\Seen) RFC822.SIZE 99 INTERNALDATE "...")`` as a
dict of items, flag lists as text, INTERNALDATE as an aware datetime.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from transcoder.backend.response_syntax import DataResponse, String


def flag_list(value: Any) -> tuple[str, ...]:
    """A parenthesised flag list's tokens as text."""
    if not isinstance(value, list):
        return ()
    return tuple(t.decode("utf-8", "replace") for t in value if isinstance(t, bytes))


def fetch_items(response: DataResponse) -> dict[bytes, Any]:
    """``{ITEM: value}`` of a ``* n FETCH (ITEM value ...)`` response (names upper-cased)."""
    items = response.tokens[2] if len(response.tokens) > 2 else []
    if not isinstance(items, list):
        return {}
    out: dict[bytes, Any] = {}
    for i in range(0, len(items) - 1, 2):
        name = items[i]
        if isinstance(name, bytes):
            out[name.upper()] = items[i + 1]
    return out


def parse_internal_date(value: Any) -> datetime:
    """An INTERNALDATE (``"05-Dec-2026 06:51:12 +0000"``) as an aware datetime."""
    text = value.value if isinstance(value, String) else value
    if not isinstance(text, bytes):
        return datetime.fromtimestamp(0, UTC)
    return _internal_date(text)


@functools.lru_cache(maxsize=1024)
def _internal_date(text: bytes) -> datetime:
    """Parsed once per distinct value: messages delivered together share their dates."""
    try:
        return datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
