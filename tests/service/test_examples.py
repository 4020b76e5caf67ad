"""The shipped job files are valid and within the default limits."""
from __future__ import annotations

import json

import pytest

from service.jobspec import prepare
from service.schemas import JobCreate
from service.settings import Settings
from helpers import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.json"))


def test_the_readme_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"tiny-cpu-job.json", "gpu-proxy-job.json", "transfer-study-cpu.json"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_job(path):
    prepared = prepare(JobCreate.model_validate(json.loads(path.read_text())), Settings())
    assert prepared.grid and prepared.steps > 0


def test_gpu_proxy_is_the_default_proxy():
    job = json.loads((REPO_ROOT / "examples" / "gpu-proxy-job.json").read_text())
    assert (job["model"]["width"], job["model"]["depth"], job["schedule"]["seq_len"]) == (256, 8, 1024)
    assert job["lr_grid"]["count"] == 8


def test_cpu_transfer_study_is_small():
    job = json.loads((REPO_ROOT / "examples" / "transfer-study-cpu.json").read_text())
    prepared = prepare(JobCreate.model_validate(job), Settings())
    assert prepared.widths == [32, 64, 128] and 4 <= job["lr_grid"]["count"] <= 5
    assert prepared.steps <= 100 and len(prepared.grid) == 3 * job["lr_grid"]["count"]
