"""Bearer tokens: generated with `secrets`, stored as SHA-256 hex digests, compared in constant time; the tokens
named in settings are stored once per process."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from service import crud
from service.db import transaction

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


def sync_settings_tokens(state) -> None:
    """Store the hashes of the tokens named in settings, once per process. `state`: the app's (settings, sessions,
    tokens_synced); a failed attempt (the schema not migrated yet) leaves it to the next authentication."""
    if state.tokens_synced:
        return
    if state.settings.api_tokens:
        with transaction(state.sessions) as session:
            crud.ensure_tokens(session, hashes={hash_token(t): "settings" for t in state.settings.api_tokens})
    state.tokens_synced = True
