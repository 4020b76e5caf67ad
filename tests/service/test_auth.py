"""Tokens with a lifecycle (service/auth.py, the token functions of crud, `deltamu token`): a token dropped from
DELTAMU_API_TOKENS is revoked at the next start, a revoked token is refused, and each route asks for a scope
(read < write < admin)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, TEST_TOKEN, tiny_job

pytestmark = pytest.mark.integration


def deltamu_token(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", "token", *args], cwd=REPO_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(env: dict[str, str], name: str, scope: str) -> str:
    r = deltamu_token(env, "create", "--name", name, "--scope", scope)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]        # the secret, printed once, last


def test_a_token_removed_from_settings_is_refused_after_restart(pg_env, make_client):
    old, kept = "old-" + TEST_TOKEN, TEST_TOKEN
    before = make_client(pg_env, api_tokens=[old, kept])
    assert before.post("/v1/jobs/none/cancel", headers=bearer(old)).status_code == 404    # authenticated
    after = make_client(pg_env, api_tokens=[kept])                                        # the restart
    r = after.post("/v1/jobs/none/cancel", headers=bearer(old))
    assert r.status_code == 401 and r.json()["type"].endswith("invalid-token")
    assert after.post("/v1/jobs/none/cancel", headers=bearer(kept)).status_code == 404
    # even a process that still names it does not bring it back: revocation is final
    again = make_client(pg_env, api_tokens=[old, kept])
    assert again.post("/v1/jobs/none/cancel", headers=bearer(old)).status_code == 401


def test_a_revoked_token_is_refused(pg_env, make_client):
    client = make_client(pg_env, auth_reads=True)
    secret = create(pg_env, "ci", "write")
    assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200
    listed = deltamu_token(pg_env, "list")
    assert listed.returncode == 0 and secret not in listed.stdout
    row = next(line.split() for line in listed.stdout.splitlines() if " ci " in f" {line} ")
    assert row[2] == "write" and row[-1] == "-"                         # id name scope created revoked
    revoked = deltamu_token(pg_env, "revoke", row[0])
    assert revoked.returncode == 0, revoked.stderr
    r = client.get("/v1/jobs", headers=bearer(secret))
    assert r.status_code == 401 and r.json()["type"].endswith("invalid-token")
    assert "-" != deltamu_token(pg_env, "list").stdout.splitlines()[-1].split()[-1]
    again = deltamu_token(pg_env, "revoke", row[0])                     # one line, a non-zero exit
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    missing = deltamu_token(pg_env, "revoke", "999999")
    assert missing.returncode == 1 and missing.stderr.startswith("deltamu: error:")


def test_a_read_token_cannot_write(pg_env, make_client):
    client = make_client(pg_env, auth_reads=True)
    reader = create(pg_env, "dashboard", "read")
    assert client.get("/v1/jobs", headers=bearer(reader)).status_code == 200
    r = client.post("/v1/jobs", json=tiny_job(), headers=bearer(reader))
    assert r.status_code == 403 and r.json()["type"].endswith("insufficient-scope")
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert client.post("/v1/jobs/none/cancel", headers=bearer(reader)).status_code == 403
    writer = create(pg_env, "ci", "write")
    assert client.post("/v1/jobs/none/cancel", headers=bearer(writer)).status_code == 404
    admin = create(pg_env, "ops", "admin")
    assert client.post("/v1/jobs/none/cancel", headers=bearer(admin)).status_code == 404


def test_reads_need_a_token_by_default(pg_env, make_client):
    from service.settings import Settings
    assert Settings.model_fields["auth_reads"].default is True
    client = make_client(pg_env, auth_reads=True)
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200   # open
    opened = make_client(pg_env, auth_reads=False)
    assert opened.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize("args, message", [
    (("create", "--name", "settings", "--scope", "write"), "reserved"),
    (("create", "--name", "x", "--scope", "root"), "invalid choice"),
    (("create", "--name", "", "--scope", "read"), "name"),
    (("revoke", "abc"), "invalid int"),
])
def test_token_commands_refuse_bad_input_in_one_line(pg_env, args, message):
    r = deltamu_token(pg_env, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
