"""The whole product in one go, as a user runs it: `deltamu up` on the embedded default, a job file submitted over
HTTP, polled to a terminal state, the recommendation fetched. Prints the wall time from POST to SUCCEEDED and the
trained tokens per second, and writes everything to --out.

    python benchmarks/product.py examples/gpu-proxy-job.json --out $OUT      # on a GPU machine (issue 6, part 3)
    python benchmarks/product.py examples/tiny-cpu-job.json --out /tmp/p     # a smoke run on a CPU
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", help="a job file, e.g. examples/gpu-proxy-job.json")
    ap.add_argument("--out", required=True, help="folder for product.json and the logs")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--timeout", type=float, default=560, help="give up after this many seconds")
    ap.add_argument("--width", type=int, default=4096, help="target width of the recommendation")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="deltamu-product-"))
    env = {**os.environ, "DELTAMU_DATA_DIR": str(data_dir), "DELTAMU_PORT": str(args.port),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = (out / "up.log").open("w")
    up = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    record: dict = {"job_file": args.job}
    try:
        base = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + args.timeout
        while not _ready(base):
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"deltamu up did not become ready; see {out / 'up.log'}")
            time.sleep(1)
        token = (data_dir / "token").read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            spec = json.loads(Path(args.job).read_text())
            t0 = time.monotonic()
            r = c.post("/v1/jobs", json=spec)
            r.raise_for_status()
            location = r.headers["Location"]
            while True:
                job = c.get(location).json()
                print(f"{time.monotonic() - t0:7.0f} s  {job['state']:<10} {job.get('progress')}", flush=True)
                if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
                    break
                time.sleep(POLL_SECONDS)
            wall = time.monotonic() - t0
            trials, cursor = [], None
            while True:    # /trials is paged
                params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = c.get(f"{location}/trials", params=params).json()
                trials += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            tokens = sum(t["tokens"] or 0 for t in trials)
            record.update(state=job["state"], seconds_post_to_done=wall, trials=len(trials), trained_tokens=tokens,
                          tokens_per_second=tokens / wall, optimum=job.get("optimum"),
                          devices=sorted({t.get("device") for t in trials if t.get("device")}),
                          per_trial=[{k: t.get(k) for k in ("id", "width", "lr", "seed", "state", "worker",
                                                            "final_val_loss", "started_at", "finished_at")}
                                     for t in trials])
            if job["state"] == "SUCCEEDED":
                record["recommendation"] = c.get(f"{location}/recommendation", params={"width": args.width}).json()
                (out / "plot.png").write_bytes(c.get(f"{location}/plot.png").content)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
    (out / "product.json").write_text(json.dumps(record, indent=2))
    print(f"{record['state']}: {record['trials']} trials, {record['trained_tokens']:,} tokens in "
          f"{record['seconds_post_to_done']:.0f} s from POST to done = {record['tokens_per_second']:,.0f} tokens/s "
          f"on {', '.join(record['devices']) or '?'}")
    return 0 if record["state"] == "SUCCEEDED" else 1


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
