"""Keys for the tokens the server signs itself (feedback tokens, page tokens), with rotation.

Deployments supply them from a secret: `--signing-keys-file` / AGENTPLANE_SIGNING_KEYS_FILE (a
file, e.g. a mounted Kubernetes Secret) or AGENTPLANE_SIGNING_KEYS (the keys themselves; an
environment variable only, never a flag, so they do not show in the process list). One key per
line (or comma-separated in the variable), each at least 32 characters (e.g. the output of
`openssl rand -base64 32`); `#` starts a comment line. The first key signs; every key listed
verifies. To rotate: add the new key as the second line on every replica, then move it first,
and delete the old one once the tokens it signed have expired (feedback tokens live at most a
day). A key removed from the list stops verifying at once.

Each purpose gets its own key, derived from the configured one with HMAC-SHA256, so a page
token can never pass as a feedback token. Without configured keys the server keeps a random
key per purpose in its database (`server_secrets`), as before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from agentplane_server.config import Settings
from agentplane_server.storage.db import Database

KEYS_VARIABLE = "AGENTPLANE_SIGNING_KEYS"
MIN_KEY_CHARS = 32


class SigningKeys:
    """HMAC-SHA256 under the first key; verification under any of them."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = list(keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"SigningKeys({len(self._keys)} keys)"

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._keys[0], data, hashlib.sha256).digest()

    def verify(self, data: bytes, signature: bytes, length: int = 32) -> bool:
        """True when `signature` is the first `length` bytes of a signature of `data` under
        one of the keys."""
        found = False
        for key in self._keys:  # every key, so the time taken says nothing about which matched
            expected = hmac.new(key, data, hashlib.sha256).digest()[:length]
            found |= hmac.compare_digest(expected, signature)
        return found

    def derive(self, purpose: str) -> SigningKeys:
        return SigningKeys(
            [
                hmac.new(key, f"agentplane {purpose}".encode(), hashlib.sha256).digest()
                for key in self._keys
            ]
        )


def parse_keys(text: str, source: str, separators: str = "\n") -> list[bytes]:
    """Keys from `text`; errors name the source and the line, never a key."""
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    keys = []
    for number, line in enumerate(text.split(separators[0]), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(
                f"{source}: signing key {number} is shorter than {MIN_KEY_CHARS} characters"
            )
        keys.append(key.encode("utf-8"))
    if not keys:
        raise ValueError(f"{source}: no signing key in it")
    return keys


def configured_keys(settings: Settings) -> SigningKeys | None:
    """The keys a deployment configured, or None; ValueError/OSError on a bad configuration."""
    path, variable = settings.signing_keys_file, os.environ.get(KEYS_VARIABLE)
    if path is not None and variable:
        raise ValueError(f"set --signing-keys-file or {KEYS_VARIABLE}, not both")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"{path}: cannot read the signing keys: {exc.strerror or exc}"
            ) from exc
        return SigningKeys(parse_keys(text, str(path)))
    if variable:
        return SigningKeys(parse_keys(variable, KEYS_VARIABLE, "\n,"))
    return None


async def signing_keys(settings: Settings, db: Database, purpose: str) -> SigningKeys:
    """The keys for one purpose: derived from the configured keys, else the database's."""
    configured = configured_keys(settings)
    if configured is not None:
        return configured.derive(purpose)
    return SigningKeys([await db.secret(purpose)])
