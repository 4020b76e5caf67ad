"""Starting Celery worker processes (for `deltamu up` and `deltamu worker`): one per visible GPU
(CUDA_VISIBLE_DEVICES set to that GPU, concurrency 1), or one CPU worker when there is no GPU. GPUs are counted
without initialising CUDA in this parent process. The workers' code is named by module (worker.celery_app), never
imported here."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from service.settings import Settings

STOP_GRACE_SECONDS = 10.0


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else what torch
    counts in a child process (a container may lack nvidia-smi), else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        out = _run([smi, "--query-gpu=index", "--format=csv,noheader"])
        if out is not None:
            return [line.strip() for line in out.splitlines() if line.strip()]
    out = _run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"])
    count = int(out.strip()) if out and out.strip().isdigit() else 0
    return [str(i) for i in range(count)]


def _run(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def worker_commands(settings: Settings, *, name: str = "deltamu", gpus: list[str] | None = None,
                    cpu_workers: int = 1) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, environment) of each worker process to start: `settings` as DELTAMU_* variables (Settings.as_environment:
    the worker runs with these settings) and the GPU it may see."""
    gpus = visible_gpus() if gpus is None else gpus
    env = settings.as_environment()
    base = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--queues", settings.queue,
            # the server-less broker has no broadcast: no gossip, mingle or event heartbeats
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if gpus:
        share = str(settings.pack_share or len(gpus))       # the workers started together split each job's trials
        return [(base + ["--hostname", f"{name}-gpu{gpu}@%h"],
                 {**env, "CUDA_VISIBLE_DEVICES": gpu, "DELTAMU_PACK_SHARE": share}) for gpu in gpus]
    return [(base + ["--hostname", f"{name}-cpu{i}@%h"], {**env, "CUDA_VISIBLE_DEVICES": ""})
            for i in range(cpu_workers)]


def start(commands: list[tuple[list[str], dict[str, str]]]) -> list[subprocess.Popen]:
    """Each in its own session, so a Ctrl-C of the terminal reaches us first and we stop them in order. A command's
    environment is laid over this process's (PATH and the like)."""
    return [subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True) for argv, env in commands]


def stop(procs: list[subprocess.Popen], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL of each process group after `grace` seconds. A trial cut
    short is requeued by the reaper as a new attempt."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def supervise(procs: list[subprocess.Popen]) -> int:
    """Wait until a worker exits or we are told to stop; then stop them all. Returns an exit code."""
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        while stopping["signal"] is None:
            for p in procs:
                if p.poll() is not None:
                    return p.returncode or 1
            time.sleep(0.5)
        return 0
    finally:
        stop(procs)
