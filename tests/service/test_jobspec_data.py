"""A job's data and tokenizer as the service accepts them (service.jobspec): the proxy's vocab from the tokenizer,
the data-regime warnings, and the spec hash of jobs asked for before the new fields existed unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from gdn.tokenizer import train_bpe
from helpers import tiny_job
from service.jobspec import JobRejected, prepare
from service.schemas import JobCreate
from service.settings import Settings


def prepared(job: dict, **settings):
    return prepare(JobCreate.model_validate(job), Settings(**settings))


def test_jobs_from_before_the_data_fields_keep_their_spec_hash():
    """Hashes computed by the code before issue 18 (tokenizer, text_column, token_dtype, weight_decay_rule at their
    defaults are left out), so `reuse` still finds the jobs stored then."""
    assert prepared(tiny_job()).spec_sha256 == "4b4594a9499469b91f206d9017153c25ea9155d817fc3433742a4b39dc5a4d99"
    sgd = tiny_job(data={"source": "builtin"}, optimizer={"name": "sgd", "weight_decay": 0.01})
    assert prepared(sgd).spec_sha256 == "5e1dcf77f90ce270cbb0c4bf07e5d675e3f19b7a4dc451cb58408917554460fb"
    independent = tiny_job(optimizer={"name": "sgd", "weight_decay": 0.01, "weight_decay_rule": "independent"})
    assert prepared(independent).spec_sha256 != prepared(sgd).spec_sha256


def test_the_proxy_takes_the_tokenizers_vocab(tmp_path):
    (tmp_path / "data").mkdir()
    text = tmp_path / "data" / "c.txt"
    rng = np.random.default_rng(0)
    text.write_text("\n".join(" ".join(rng.choice(["gated", "delta", "rule", "state", "decay"], 8))
                              for _ in range(500)))
    tok = tmp_path / "tok.json"
    assert train_bpe([text.read_text()], 270, tok, show_progress=False) == 270
    job = prepared(tiny_job(data={"source": str(text), "tokenizer": str(tok)}), allowed_data_dirs=[tmp_path])
    assert job.sweep_config["model"]["vocab_size"] == 270 and job.spec["model"]["vocab_size"] == 270
    with pytest.raises(JobRejected, match="differs"):
        prepared(tiny_job(model={"width": 32, "depth": 1, "vocab_size": 500},
                          data={"source": str(text), "tokenizer": str(tok)}), allowed_data_dirs=[tmp_path])
    with pytest.raises(JobRejected, match="tokenizer .* not under an allowed data directory"):
        prepared(tiny_job(data={"source": str(text), "tokenizer": str(tok)}), allowed_data_dirs=[tmp_path / "data"])
