"""benchmarks/pack_numerics.py on the CPU: in float32 a trial's curve does not depend on which trials share its pack,
so every difference the script reports there is exactly zero; on a GPU it measures what bf16 adds."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_split_packs_give_the_one_pack_results_on_the_cpu(tmp_path):
    job = json.load(open(os.path.join(REPO, "examples", "tiny-cpu-job.json")))
    job["model"]["depth"], job["schedule"]["seq_len"], job["schedule"]["batch_size"] = 1, 32, 2
    job["lr_grid"], job["eval_batches"] = {"min": 1e-3, "max": 0.05, "count": 4}, 1
    (tmp_path / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "pack_numerics.py"), str(tmp_path / "job.json"),
                    "--steps", "3", "--log-every", "1", "--packs", "1,3;0,2", "--out", str(tmp_path)],
                   check=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True)
    result = json.loads((tmp_path / "pack_numerics.json").read_text())
    assert result["split"] == [[1, 3], [0, 2]]
    curves = {name: [run[str(i)]["curve"] for i in range(4)] for name, run in result["runs"].items()}
    assert curves["A"][0] != curves["A"][3]                   # the LRs differ, so the trials do
    assert curves["B"] == curves["A"] == curves["A2"]
    assert all(row["B-A"] == 0 for row in result["rows"])
