"""Bring your own data and tokenizer, over HTTP to a real `celery worker` on PostgreSQL and Redis (issue 18): a BPE
trained by `deltamu tokenizer train` runs a tiny sweep, the proxy at the tokenizer's vocabulary; a job whose trials
repeat their corpus is told so when submitted and in its recommendation."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gdn.corpus import cached_tokens
from gdn.spec import DataSpec
from gdn.tokenizer import load_tokenizer
from helpers import REPO_ROOT, assert_problem, settings_from_env, tiny_job, wait_for
from service.db import make_engine, make_session_factory
from service.main import create_app
from service.models import JobState
from worker_helpers import AUTH, JOB_TIMEOUT, job_state, logs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = "gated delta rule state decay write read key value query head chunk width learning rate the of".split()


def write_text(path: Path, lines: int) -> Path:
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(WORDS, 10)) for _ in range(lines)))
    return path


def test_a_trained_bpe_runs_a_sweep_and_a_repeated_corpus_is_warned_about(pg_env, tmp_path, workers, monkeypatch):
    text = write_text(tmp_path / "corpus.txt", 3000)
    tok = tmp_path / "tok.json"
    r = subprocess.run([sys.executable, "-m", "gdn", "tokenizer", "train", "--vocab", "320", str(text), "-o", str(tok),
                        "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    small = write_text(tmp_path / "small.txt", 40)           # ~2.6 KB: a trial of 30 x 2 x 32 tokens sees it ~0.8x
    env = {**pg_env, "DELTAMU_ALLOWED_DATA_DIRS": str(tmp_path), "DELTAMU_CACHE_DIR": str(tmp_path / "cache")}
    engine = make_engine(settings_from_env(env).db_url)
    sessions = make_session_factory(engine)
    with TestClient(create_app(settings_from_env(env))) as client:
        r = client.post("/v1/jobs", json=tiny_job(data={"source": str(text), "tokenizer": str(tok)}), headers=AUTH)
        assert r.status_code == 202, r.text
        bpe = r.json()
        assert bpe["spec"]["model"]["vocab_size"] == 320 and bpe["warnings"] == []
        repeated_job = tiny_job(data={"source": str(small)}, lr_grid={"values": [0.01]},
                                schedule={"steps": 60, "warmup_steps": 3, "batch_size": 2, "seq_len": 32})
        r = client.post("/v1/jobs", json=repeated_job, headers=AUTH)
        assert r.status_code == 202, r.text
        repeated = r.json()
        (warning,) = repeated["warnings"]
        assert "epochs" in warning and "9.8 %" in warning and "3,840 tokens" in warning

        worker = workers(env, "data")
        for job in (bpe, repeated):
            wait_for(lambda: job_state(sessions, job["id"]) == JobState.SUCCEEDED, JOB_TIMEOUT,
                     what="job SUCCEEDED", on_timeout=lambda: logs(worker))
        rec = client.get(f"/v1/jobs/{bpe['id']}/recommendation", params={"width": 64}).json()
        assert rec["proxy_model"]["vocab_size"] == rec["target_model"]["vocab_size"] == 320
        assert not any("epochs" in w for w in rec["warnings"])
        trials = client.get(f"/v1/jobs/{bpe['id']}/trials").json()["items"]
        monkeypatch.setenv("DELTAMU_CACHE_DIR", env["DELTAMU_CACHE_DIR"])
        cached = cached_tokens(DataSpec(str(text), tokenizer=str(tok)), load_tokenizer(str(tok)))
        assert {t["data_sha256"] for t in trials} == {cached.sha256}          # the worker's cache, reused here
        rec = client.get(f"/v1/jobs/{repeated['id']}/recommendation", params={"width": 64}).json()
        assert any("epochs" in w for w in rec["warnings"])

        # bad tokenizers are 422s that say why
        outside = Path(tmp_path.parent / "elsewhere.json")
        for data, why in (({"source": str(text), "tokenizer": str(outside)}, "not under an allowed data directory"),
                          ({"source": str(text), "tokenizer": str(text)}, "tiktoken"),
                          ({"source": str(text), "tokenizer": str(tok), "vocab_size": 999}, "differs"),
                          ({"source": str(text), "tokenzier": str(tok)}, None)):
            body = assert_problem(client.post("/v1/jobs", json=tiny_job(data=data), headers=AUTH), 422)
            assert why is None or why in str(body), body
    engine.dispose()
