"""What every service's resources share: generated ids and etags.

An etag is the resource's version number as text; a stale one gets ABORTED (errors.etag_mismatch),
anything that is not a version number this server could have issued gets INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import secrets

from agentplane_server.errors import InvalidArgument

_ETAG = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only: str.isdigit() also accepts "²"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def parse_etag(etag: str, field: str = "etag") -> int | None:
    """The version an etag names, or None when no etag was sent (an unconditional change)."""
    if not etag:
        return None
    if not _ETAG.match(etag):
        raise InvalidArgument.field(field, "is not an etag this server issued")
    return int(etag)
