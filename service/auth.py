"""Bearer tokens: generated with `secrets`, stored as SHA-256 hex digests, compared in constant time."""
from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32


def generate_token() -> str:
    return "dmu_" + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def match_token(presented: str, stored: list[tuple[int, str]]) -> int | None:
    """The id of the stored token whose hash equals the presented token's; every stored hash is compared, with
    hmac.compare_digest, so the time taken does not depend on which one (if any) matched."""
    digest = hash_token(presented)
    found = None
    for token_id, stored_digest in stored:
        if hmac.compare_digest(digest, stored_digest):
            found = token_id
    return found
