"""Bearer tokens: generated with `secrets`, stored as SHA-256 hex digests with a scope, compared in constant time.
The tokens named in settings are synced once per process: new ones stored, dropped ones revoked."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from service import crud
from service.db import transaction
from service.models import ApiToken, TokenScope

TOKEN_BYTES = 32
log = logging.getLogger("deltamu.auth")


def generate_token() -> str:
    return "dmu_" + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def match_token(presented: str, stored: list[tuple[int, str, TokenScope]]) -> tuple[int, TokenScope] | None:
    """The (id, scope) of the stored token whose hash equals the presented token's; every stored hash is compared,
    with hmac.compare_digest, so the time taken does not depend on which one (if any) matched."""
    digest = hash_token(presented)
    found = None
    for token_id, stored_digest, scope in stored:
        if hmac.compare_digest(digest, stored_digest):
            found = (token_id, scope)
    return found


def issue_token(session, *, name: str, scope: TokenScope) -> tuple[ApiToken, str]:
    """A new token: its row and its secret, which is stored nowhere (only its hash is)."""
    secret = generate_token()
    return crud.create_token(session, name=name, scope=scope, token_sha256=hash_token(secret)), secret


def sync_settings_tokens(state) -> None:
    """Store the hashes of the tokens named in settings and revoke the settings tokens no longer named, once per
    process. `state`: the app's (settings, sessions, tokens_synced); a failed attempt (the schema not migrated
    yet) leaves it to the next authentication."""
    if state.tokens_synced:
        return
    with transaction(state.sessions) as session:
        revoked = crud.sync_settings_tokens(session, hashes={hash_token(t) for t in state.settings.api_tokens})
    if revoked:
        log.warning("revoked %d token(s) no longer named in DELTAMU_API_TOKENS", revoked)
    state.tokens_synced = True
