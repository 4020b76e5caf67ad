"""Which worker processes `deltamu worker` / `deltamu up` start: one per GPU (pinned, concurrency 1), else CPU."""
from __future__ import annotations

from service.settings import Settings
from service.launch import visible_gpus, worker_commands


def test_one_worker_per_gpu_each_pinned_with_concurrency_one():
    commands = worker_commands(Settings(queue="q"), name="w", gpus=["0", "3"])
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in commands] == ["0", "3"]
    for argv, _ in commands:
        assert argv[argv.index("--concurrency") + 1] == "1"
        assert argv[argv.index("--queues") + 1] == "q"
    assert len({argv[argv.index("--hostname") + 1] for argv, _ in commands}) == 2


def test_gpu_workers_started_together_split_each_job():
    commands = worker_commands(Settings(), gpus=["0", "1", "2"])
    assert [env["DELTAMU_PACK_SHARE"] for _, env in commands] == ["3", "3", "3"]
    commands = worker_commands(Settings(pack_share=1), gpus=["0", "1"])          # asked for: one takes all
    assert [env["DELTAMU_PACK_SHARE"] for _, env in commands] == ["1", "1"]
    assert "DELTAMU_PACK_SHARE" not in worker_commands(Settings(), gpus=[])[0][1]


def test_workers_are_given_the_settings_they_are_started_with(tmp_path):
    settings = Settings(data_dir=tmp_path, api_tokens=["t1"], queue="q")
    for _, env in worker_commands(settings, gpus=["0"]) + worker_commands(settings, gpus=[]):
        assert env["DELTAMU_DATA_DIR"] == str(tmp_path) and env["DELTAMU_API_TOKENS"] == "t1"
        assert env["DELTAMU_QUEUE"] == "q"


def test_cpu_workers_see_no_gpu():
    commands = worker_commands(Settings(), gpus=[], cpu_workers=2)
    assert len(commands) == 2 and all(env["CUDA_VISIBLE_DEVICES"] == "" for _, env in commands)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    assert visible_gpus() == ["1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
