"""The transfer study end to end at a tiny scale: sweeps per width, transfer trials, the report with its plots."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tiny_transfer_study_writes_a_report(tmp_path):
    results, md = tmp_path / "tiny.jsonl", tmp_path / "transfer.md"
    cmd = [sys.executable, "benchmarks/transfer.py", "--scale", "tiny", "--results", str(results), "--md", str(md),
           "--workers", "2"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    kinds = {(rec["arm"], rec["width"], rec["kind"]) for rec in records}
    for arm in ("adamw-sp", "adamw-mup"):
        for width in (32, 64):
            assert (arm, width, "grid") in kinds and (arm, width, "transfer") in kinds
    text = md.read_text()
    assert "| adamw-mup | 20 |" in text and "loss at transferred lr" in text
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # resuming runs nothing new
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "running" not in again.stdout
    assert len(results.read_text().splitlines()) == len(records)


def test_tiny_sgd_study_judges_the_sgd_preset_against_sgd_sp(tmp_path):
    """The SGD half of the study at a tiny scale (issue 14): the shipped SGD preset (mup-sgd: alpha 4, sigma_0 x 2,
    the matrices' init ~ m^-1/6, the width-consistent clip) against SGD-SP, every width swept and transferred, the
    report's criteria rows written."""
    results, md = tmp_path / "sgd.jsonl", tmp_path / "sgd.md"
    cmd = [sys.executable, "benchmarks/transfer.py", "--scale", "tiny", "--arms", "sgd-sp,sgd-mup-sgd",
           "--results", str(results), "--md", str(md), "--workers", "2", "--pack", "3", "--concurrent-widths"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    for arm in ("sgd-sp", "sgd-mup-sgd"):
        for width in (32, 64):
            assert {"grid", "transfer"} <= {rec["kind"] for rec in records if (rec["arm"], rec["width"]) == (arm, width)}
    assert all((rec["output_mult"], rec["init_mult"]) == (4.0, 2.0) for rec in records
               if rec["arm"] == "sgd-mup-sgd")
    text = md.read_text()
    assert "| sgd-mup-sgd | 20 |" in text and "| sgd-sp | 20 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| sgd-mup-sgd | 20 |"))
    assert row.count("|") == 7 and "%" in row           # argmin range, vs tuned SP, noise verdict, wider-is-better


def test_concurrent_widths_centre_each_grid_by_the_shorter_horizons_shift(tmp_path):
    """--concurrent-widths: a wider width's first grid is centred at the base optimum of this horizon, moved by
    the shift a shorter horizon measured at that width (lattice units: 2^(k/2))."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    def grid(horizon, width, centre_k):          # a parabola in log2(lr) with its minimum at lattice point centre_k
        return [{"arm": "adamw-sp", "horizon": horizon, "width": width, "kind": "grid", "lr": transfer.lattice(k),
                 "lr_key": f"{transfer.lattice(k):.10g}", "seed": s, "output_mult": 1.0, "init_mult": 1.0,
                 "final_val_loss": 2.0 + 0.01 * (k - centre_k) ** 2 + 0.001 * s, "status": "COMPLETED"}
                for k in range(centre_k - 3, centre_k + 4) for s in (0, 1)]

    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in grid(20, 32, -14) + grid(20, 64, -17) + grid(40, 32, -13)))
    study = transfer.Study(transfer.SCALES["tiny"], path, workers=1, threads=1, concurrent_widths=True)
    assert study.predicted_k("adamw-sp", 40, 64, (1.0, 1.0)) == -16      # -13 + (-17 - -14)
    assert study.predicted_k("adamw-sp", 20, 64, (1.0, 1.0)) == -14      # no shorter horizon: the base optimum


def test_a_width_added_to_a_finished_study_is_centred_on_the_trend_of_the_narrower_ones(tmp_path):
    """No shorter horizon reached the new width: its grid is centred by carrying on, linearly in log2(width), the
    fitted optima of the two widest narrower widths at the same horizon (SP's drift goes on; muP's stays put)."""
    import dataclasses
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    def grid(width, centre_k):
        return [{"arm": "adamw-sp", "horizon": 20, "width": width, "kind": "grid", "lr": transfer.lattice(k),
                 "lr_key": f"{transfer.lattice(k):.10g}", "seed": s, "output_mult": 1.0, "init_mult": 1.0,
                 "final_val_loss": 2.0 + 0.01 * (k - centre_k) ** 2 + 0.001 * s, "status": "COMPLETED"}
                for k in range(centre_k - 3, centre_k + 4) for s in (0, 1)]

    scale = dataclasses.replace(transfer.SCALES["tiny"], widths=(32, 64, 128, 256))
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in grid(32, -14) + grid(64, -15)))
    study = transfer.Study(scale, path, workers=1, threads=1, concurrent_widths=True)
    assert study.predicted_k("adamw-sp", 20, 128, (1.0, 1.0)) == -16        # base and 64: one step per doubling
    path.write_text("\n".join(json.dumps(r) for r in grid(32, -14) + grid(64, -15) + grid(128, -18)))
    study = transfer.Study(scale, path, workers=1, threads=1, concurrent_widths=True)
    assert study.predicted_k("adamw-sp", 20, 256, (1.0, 1.0)) == -21        # 64 and 128: three steps per doubling


def test_workers_take_the_listed_gpus_round_robin():
    """--gpus 0,1: each worker process sees one GPU (CUDA_VISIBLE_DEVICES set before CUDA starts), in turn."""
    import concurrent.futures as cf
    import multiprocessing
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(2, mp_context=ctx, initializer=transfer._init_worker,
                                initargs=(1, ("0", "1"), ctx.Value("i", 0))) as pool:
        seen = [pool.submit(subprocess.check_output, ["sh", "-c", "sleep 1; echo $CUDA_VISIBLE_DEVICES"], text=True)
                for _ in range(4)]
        assert sorted({f.result().strip() for f in seen}) == ["0", "1"]


def test_criterion_two_is_judged_against_the_seed_noise():
    """The per-seed noise is pooled near each sweep's optimum; a difference within two standard deviations of a
    difference of seed means is a tie, beyond it better or worse."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    def trial(arm, kind, k, seed, loss):
        return {"arm": arm, "horizon": 20, "width": 64, "kind": kind, "lr": transfer.lattice(k),
                "lr_key": f"{transfer.lattice(k):.10g}", "seed": seed, "output_mult": 1.0, "init_mult": 1.0,
                "final_val_loss": loss, "status": "COMPLETED"}

    near = [trial("adamw-sp", "grid", -14, s, 2.0 + d) for s, d in ((0, -0.02), (1, 0.02))]   # 1 % apart
    far = [trial("adamw-sp", "grid", -8, s, 3.0 + d) for s, d in ((0, -0.5), (1, 0.5))]       # an edge: ignored
    sd = transfer.seed_noise(near + far)[20, 64]
    assert abs(sd - 0.02 * 2 ** 0.5 / 2.0) < 1e-9                   # sample sd of (1.98, 2.02), relative to 2.0
    noise = 100 * transfer.NOISE_SIGMAS * sd                          # two-seed means on both sides
    assert transfer._verdict(0.5 * noise, noise) == "tie"
    assert transfer._verdict(-1.5 * noise, noise) == "better" and transfer._verdict(1.5 * noise, noise) == "worse"
    assert transfer._verdict(float("nan"), noise) == "-"


def test_tiny_study_at_a_bpe_vocabulary_with_the_weight_decay_arm(tmp_path):
    """The study at a tokenizer's vocabulary (issue 18): a BPE trained by `deltamu tokenizer train`, its corpus
    pre-tokenized by `deltamu tokenizer encode` into a .bin (what the GPU run loads, with no tokenizer library);
    the shipped AdamW preset with coupled and with independent weight decay, the latter at the transferred LR only
    and on the former's base-width trials (as the 32k GPU study runs it); every record says its vocab, and a
    results file of another vocab is refused."""
    rng = __import__("random").Random(0)
    words = "gated delta rule state decay write read key value query head chunk width learning rate".split()
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(6000)))
    env = {**os.environ, "DELTAMU_CACHE_DIR": str(tmp_path / "cache")}
    for cmd in (["tokenizer", "train", "--vocab", "300", str(text), "-o", str(tmp_path / "tok.json"), "--quiet"],
                ["tokenizer", "encode", str(text), "--tokenizer", str(tmp_path / "tok.json"), "-o",
                 str(tmp_path / "ids.bin")]):
        r = subprocess.run([sys.executable, "-m", "gdn", *cmd], cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
    results, md = tmp_path / "bpe.jsonl", tmp_path / "bpe.md"
    cmd = [sys.executable, "benchmarks/transfer.py", "--scale", "tiny", "--arms", "adamw-mup-default,adamw-mup-wdind",
           "--data", str(tmp_path / "ids.bin"), "--vocab-size", "300", "--results", str(results), "--md", str(md),
           "--workers", "2", "--grid-points", "3", "--horizons", "10", "--concurrent-widths",
           "--transfer-only", "adamw-mup-wdind"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert {rec["vocab_size"] for rec in records} == {300}
    assert {rec["arm"] for rec in records} == {"adamw-mup-default", "adamw-mup-wdind"}
    # at the base width the two rules are one trial (multipliers 1): the independent one ran only its transfer
    # trials at 2x, at the preset's transferred LR, where its hidden matrices decay twice as fast
    mine = [(rec["width"], rec["kind"], rec["seed"], rec["lr"], rec["final_val_loss"]) for rec in records
            if rec["arm"] == "adamw-mup-wdind"]
    theirs = {(w, s): (lr, loss) for w, kind, s, lr, loss in
              [(rec["width"], rec["kind"], rec["seed"], rec["lr"], rec["final_val_loss"]) for rec in records
               if rec["arm"] == "adamw-mup-default"] if kind == "transfer"}
    assert {(w, kind) for w, kind, *_ in mine} == {(64, "transfer")}
    assert all(lr == theirs[64, s][0] and loss != theirs[64, s][1] for _, _, s, lr, loss in mine)
    text = md.read_text()
    assert "vocab 300" in text and "ids already tokenized" in text and "tokenizer bytes" not in text
    assert "| adamw-mup-wdind | adamw-mup-default | 10 | 64 |" in text
    other = subprocess.run([*cmd[:6], "--data", "builtin", *cmd[10:]], cwd=REPO, capture_output=True, text=True,
                           timeout=300, env=env)
    assert other.returncode == 2 and "vocab [300], not 256" in other.stderr


def _parabola(arm, width, centre_k, mults=(1.0, 1.0)):
    """Two seeds of a 20-step grid whose loss is a parabola in log2(lr) with its minimum at lattice point centre_k."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer
    return [{"arm": arm, "horizon": 20, "width": width, "kind": "grid", "lr": transfer.lattice(k),
             "lr_key": f"{transfer.lattice(k):.10g}", "seed": s, "output_mult": mults[0], "init_mult": mults[1],
             "final_val_loss": 2.0 + 0.01 * (k - centre_k) ** 2 + 0.001 * s, "status": "COMPLETED", "seconds": 1.0}
            for k in range(centre_k - 3, centre_k + 4) for s in (0, 1)]


def test_an_arm_equal_to_another_at_the_base_width_takes_its_trials_there(tmp_path):
    """adamw-mup-wdind is the shipped preset at m = 1 (its weight-decay rule divides by LR multipliers, all 1 there):
    the study fits it on the preset's base-width trials and gives it transfer trials only beyond the base; the
    report shows the shared base row, a transfer-only width with criterion (2) but no argmin, and the two rules
    against each other. An arm that differs at the base width is refused."""
    import dataclasses
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    preset, twin, mults = "adamw-mup-default", "adamw-mup-wdind", (4.0, 2.0)
    scale = dataclasses.replace(transfer.SCALES["tiny"], arms=("adamw-sp", preset, twin), transfer_only=(twin,))
    records = (_parabola("adamw-sp", 32, -14) + _parabola("adamw-sp", 64, -16)
               + _parabola(preset, 32, -13, mults=mults) + _parabola(preset, 64, -13, mults=mults))
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    study = transfer.Study(scale, path, workers=1, threads=1, concurrent_widths=True)
    assert study.fit(twin, 20, 32, mults).lr == study.fit(preset, 20, 32, mults).lr
    arms = [transfer.ARMS[a] for a in scale.arms]
    jobs = study.transfer_jobs(arms, 20, {a.name: a.mults[0] for a in arms})
    assert {(j["key"]["arm"], j["width"]) for j in jobs} == {("adamw-sp", 32), ("adamw-sp", 64), (preset, 32),
                                                           (preset, 64), (twin, 64)}
    lr = study.fit(preset, 20, 32, mults).lr
    transfers = [{"arm": arm, "horizon": 20, "width": w, "kind": "transfer", "lr": lr, "lr_key": f"{lr:.10g}",
                  "seed": s, "output_mult": 4.0, "init_mult": 2.0, "final_val_loss": loss + 0.001 * s,
                  "status": "COMPLETED", "seconds": 1.0}
                 for arm, w, loss in ((preset, 32, 2.0), (preset, 64, 1.9), (twin, 64, 1.8)) for s in (0, 1)]
    summaries = {s.arm: s for s in transfer.summarise(records + transfers)}
    base_row, wide_row = summaries[twin].rows
    assert base_row["width"] == 32 and base_row["best_loss"] == summaries[preset].rows[0]["best_loss"]
    assert base_row["seconds"] == 0                    # the preset's trials, counted once, under the preset
    assert wide_row["width"] == 64 and wide_row["argmin_lr"] != wide_row["argmin_lr"]       # nan: no grid there
    assert abs(wide_row["vs_sp_pct"] - 100 * (1.8005 - 2.0005) / 2.0005) < 1e-9       # SP best: its seed mean
    (variant_base, variant_wide) = transfer.variant_rows(list(summaries.values()), records + transfers)
    assert variant_base["diff_pct"] == 0 and abs(variant_wide["diff_pct"] - 100 * (1.8005 - 1.9005) / 1.9005) < 1e-9
    other = dataclasses.replace(transfer.ARMS[twin], same_at_base="adamw-mup")      # alpha and sigma_0 differ
    try:
        transfer.check_same_at_base(other)
        raise AssertionError("an arm that differs at the base width shared its trials")
    except ValueError as e:
        assert "output_mults" in str(e)


def test_a_prior_study_centres_the_first_grids(tmp_path):
    """--centre-from: the base width's first grid is centred on the prior study's base optimum, and a wider width
    with nothing measured yet on this study's base optimum moved by the prior's shift there."""
    import dataclasses
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import transfer

    prior = _parabola("adamw-sp", 32, -14) + _parabola("adamw-sp", 64, -17)
    scale = dataclasses.replace(transfer.SCALES["tiny"], arms=("adamw-sp",))
    empty = transfer.Study(scale, tmp_path / "none.jsonl", workers=1, threads=1, prior=prior)
    assert empty.base_k(transfer.ARMS["adamw-sp"], 20, (1.0, 1.0)) == -14
    assert empty.base_k(transfer.ARMS["adamw-sp"], 40, (1.0, 1.0)) == transfer.nearest_k(-7.5)   # not in the prior
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _parabola("adamw-sp", 32, -12)))
    study = transfer.Study(scale, path, workers=1, threads=1, concurrent_widths=True, prior=prior)
    assert study.predicted_k("adamw-sp", 20, 64, (1.0, 1.0)) == -15          # -12 + (-17 - -14)
    assert transfer.Study(scale, path, workers=1, threads=1).predicted_k("adamw-sp", 20, 64, (1.0, 1.0)) == -12
