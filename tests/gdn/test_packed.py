"""Packed training: K trials in one batched model give the curves K separate train_trial runs give."""
import dataclasses
import math
import random

import pytest
import torch

from gdn.config import GDNConfig, count_params
from gdn.spec import DataSpec, OptimizerSpec, COMPLETED, DIVERGED, ScheduleSpec, SweepConfig, TrialCancelled, TrialSpec
from gdn.ops.cross_entropy import scaled_logits
from gdn.ops.gated_delta_rule import chunk_gated_delta_rule, dispatch
from gdn.pack_plan import estimate_trial_bytes, fit_pack_size, measure_pack_bytes, plan_packs
from gdn.model import GatedDeltaNet
from gdn.packed import _Pack, pack_key, train_packed
from gdn.packed_optim import PackedOptimizer
from gdn.parametrization import Role
from gdn.trial import build_model
from gdn.train import train_trial

EQUAL_RTOL = 1e-9   # float64 packed vs separate runs (issue 6)
CORPUS: DataSpec


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny shapes on a shared 2-core box: intra-op threads only wait on each other (a float64 depthwise conv
    took 0.17 s on 2 threads, 0.15 ms on 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def corpus(tmp_path_factory):
    """A small fixed text corpus: loads in milliseconds, where the builtin one reads the standard library."""
    global CORPUS
    words = "gated delta rule state decay write read key value query head chunk width learning rate".split()
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(20_000)))
    CORPUS = DataSpec(source=str(path))
    return CORPUS


def tiny(optimizer="adamw", steps=8, weight_decay_rule="coupled", weight_decay=None, **kw):
    return SweepConfig(model=GDNConfig(width=32, depth=1),
                       optimizer=OptimizerSpec(name=optimizer, weight_decay=weight_decay,
                                               weight_decay_rule=weight_decay_rule),
                       schedule=ScheduleSpec(steps=steps, warmup_steps=2, batch_size=4, seq_len=32),
                       data=CORPUS, eval_batches=2, **kw)


def max_rel_diff(packed, single) -> float:
    """Largest relative difference over the loss, grad norm and LR of every curve point and the final loss."""
    assert [p.step for p in packed.curve] == [p.step for p in single.curve]
    pairs = [(a, b) for p, s in zip(packed.curve, single.curve)
             for a, b in ((p.loss, s.loss), (p.grad_norm, s.grad_norm), (p.lr, s.lr))]
    pairs.append((packed.final_val_loss, single.final_val_loss))
    worst = 0.0
    for a, b in pairs:
        if math.isnan(b):
            assert math.isnan(a)
        elif math.isinf(b):
            assert a == b
        else:
            worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
    return worst


# The third trial of each diverges: AdamW at LR 3 blows up at once; SGD at LR 500 too (test_train's divergent LR).
CASES = {
    "adamw": [dict(lr=1e-2, seed=0), dict(lr=3e-3, seed=1, output_mult=2.0), dict(lr=3.0, seed=0)],
    "sgd": [dict(lr=0.3, seed=0), dict(lr=0.1, seed=1), dict(lr=500.0, seed=1)],
}


@pytest.mark.parametrize("optimizer,width,wd_rule", [("adamw", None, "coupled"), ("sgd", None, "coupled"),
                                                     ("sgd", 64, "coupled"), ("adamw", 64, "independent"),
                                                     ("sgd", 64, "independent")])
def test_packed_matches_separate_runs_float64(optimizer, width, wd_rule):
    """At width 64 (m = 2) the SGD clip weighs the vector-like gradients by m^1/2 (Parametrization.clip_weight);
    under the independent weight-decay rule each decayed group's wd is divided by its LR multiplier, in both
    trainers' optimizers."""
    wd = 0.05 if (optimizer, wd_rule) == ("sgd", "independent") else None     # SGD's default decay is 0
    specs = [TrialSpec(tiny(optimizer, output_mult=c.get("output_mult", 1.0), weight_decay_rule=wd_rule,
                            weight_decay=wd),
                       lr=c["lr"], seed=c["seed"], width=width, dtype="float64", device="cpu")
             for c in CASES[optimizer]]   # on the CPU
    points, finished = [], []
    packed = train_packed(specs, progress=lambda i, p: points.append((i, p)), log_every=2,
                          on_result=lambda i, r: finished.append((i, r.status)))
    single = [train_trial(spec, log_every=2) for spec in specs]
    if wd_rule == "independent":        # the packed optimizer's groups carry the table's decay: wd / lr multiplier
        config = specs[0].config
        skeleton, p, _ = build_model(config, width, seed=0)
        decays = {tuple(names): wd for _, wd, names in PackedOptimizer(skeleton, p, config.optimizer, 2.0).groups}
        for suffix, role in (("mlp.up_proj.weight", Role.HIDDEN), ("a_proj.weight", Role.GATE_PROJ)):
            decay = next(wd for names, wd in decays.items() if any(n.endswith(suffix) for n in names))
            assert decay == pytest.approx(config.optimizer.weight_decay / p.lr_multiplier(role, optimizer, 2.0))

    assert [r.status for r in single] == [COMPLETED, COMPLETED, DIVERGED]     # the case covers both outcomes
    worst = 0.0
    for i, (p, s) in enumerate(zip(packed, single)):
        assert (p.status, p.diverged_step, p.reason, p.tokens) == (s.status, s.diverged_step, s.reason, s.tokens)
        assert p.num_params == s.num_params and p.data_sha256 == s.data_sha256
        assert [pt for j, pt in points if j == i] == p.curve
        worst = max(worst, max_rel_diff(p, s))
    print(f"{optimizer}: max relative difference packed vs separate = {worst:.3e}")
    assert worst < EQUAL_RTOL
    assert sorted(finished) == [(0, COMPLETED), (1, COMPLETED), (2, DIVERGED)]
    assert finished[0] == (2, DIVERGED)          # reported when it diverged, before the others finished


class KernelLikeFunction(torch.autograd.Function):
    """Stands in for the Triton autograd.Function: forward and backward of its own, no vmap rule."""
    calls: list[tuple[int, ...]] = []

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale):
        KernelLikeFunction.calls.append(tuple(q.shape))
        ctx.save_for_backward(q, k, v, g, beta)
        ctx.scale = scale
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale, use_qk_l2norm=True)[0]

    @staticmethod
    def backward(ctx, do):
        inputs = [x.detach().requires_grad_() for x in ctx.saved_tensors]
        with torch.enable_grad():
            o = chunk_gated_delta_rule(*inputs, scale=ctx.scale, use_qk_l2norm=True)[0]
        return (*torch.autograd.grad(o, inputs, do), None)


def kernel_like_gated_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm):
    assert use_qk_l2norm and initial_state is None and not output_final_state
    return KernelLikeFunction.apply(q, k, v, g, beta, scale), None


def test_a_custom_autograd_function_backend_runs_packed(monkeypatch):
    """The dispatch folds the trial axis into B, so a backend that vmap cannot see through trains packed."""
    monkeypatch.setattr(dispatch, "_load_triton", lambda: (kernel_like_gated_delta_rule, ""))
    specs = [TrialSpec(tiny(steps=3), lr=lr, seed=0, dtype="float64", device="cpu", backend="triton")
             for lr in (1e-2, 2e-2)]
    KernelLikeFunction.calls.clear()
    packed = train_packed(specs, log_every=1)
    assert KernelLikeFunction.calls[0][0] == 2 * 4                    # (trials x batch) in one call
    single = [train_trial(spec, log_every=1) for spec in specs]
    assert KernelLikeFunction.calls[-1][0] == 4
    assert max(max_rel_diff(p, s) for p, s in zip(packed, single)) < EQUAL_RTOL


def test_specs_of_different_architectures_do_not_pack():
    base = tiny()
    with pytest.raises(ValueError, match="width"):
        train_packed([TrialSpec(base, lr=1e-2), TrialSpec(base, lr=1e-2, width=64)])
    with pytest.raises(ValueError, match="config"):
        train_packed([TrialSpec(base, lr=1e-2), TrialSpec(tiny("sgd"), lr=1e-2)])
    with pytest.raises(ValueError, match="at least one"):
        train_packed([])
    assert pack_key(TrialSpec(base, lr=1e-2, seed=3)) == pack_key(TrialSpec(tiny(output_mult=4.0), lr=2.0))


def test_should_stop_cancels_the_pack():
    calls = []
    with pytest.raises(TrialCancelled):
        train_packed([TrialSpec(tiny(), lr=1e-2), TrialSpec(tiny(), lr=2e-2)],
                     should_stop=lambda: calls.append(1) or len(calls) >= 2, log_every=2)
    assert len(calls) == 2


def test_every_trial_diverging_at_one_log_point_ends_the_pack():
    """SGD grids often lose their whole top end at once: the pack must empty cleanly, not index with nothing."""
    cfg = tiny("sgd", steps=6, parametrization="sp")
    results = train_packed([TrialSpec(cfg, lr=lr) for lr in (1e4, 3e4, 1e5)], log_every=2)
    assert [r.status for r in results] == [DIVERGED] * 3
    assert all(r.diverged_step is not None and math.isnan(r.final_val_loss) for r in results)


def test_plan_packs_groups_by_key_and_spreads_evenly():
    a, b = tiny(), tiny("sgd")
    specs = [TrialSpec(a if i % 3 else b, lr=2.0 ** -i) for i in range(11)]   # 7 of a, 4 of b
    packs = plan_packs(specs, pack_size=lambda group: 3)
    assert sorted(i for pack in packs for i in pack) == list(range(11))
    for pack in packs:
        assert len({pack_key(specs[i]) for i in pack}) == 1
    assert sorted(len(pack) for pack in packs) == [2, 2, 2, 2, 3]     # a: 3 + 2 + 2, b: 2 + 2
    if not torch.cuda.is_available():                                 # on the CPU a key's trials make one pack
        assert sorted(len(pack) for pack in plan_packs(specs)) == [4, 7]


def test_memory_estimate_counts_weights_and_activations():
    spec = TrialSpec(tiny(), lr=1e-2)
    longer = TrialSpec(tiny(), lr=1e-2, width=64)
    fp32_weights_grads_temp_adamw = count_params(spec.config.model) * 4 * 5
    assert estimate_trial_bytes(spec) > fp32_weights_grads_temp_adamw
    assert estimate_trial_bytes(longer) > estimate_trial_bytes(spec)


def test_the_vocab_term_covers_what_the_loss_keeps():
    """Per (token, vocab entry) the estimate counts what the loss's autograd keeps of bf16 logits, measured here,
    plus its backward's two fp32 gradients and the bf16 logits and their gradient (pack_plan's comment)."""
    from gdn.ops.cross_entropy.reference import cross_entropy_reference
    from gdn.pack_plan import ACTIVATION_BYTES_PER_TOKEN
    N, V = 64, 4096
    logits = torch.randn(N, V, dtype=torch.bfloat16, requires_grad=True)
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cross_entropy_reference(logits * 1.0, torch.randint(0, V, (N,)), 2.0)
    per_entry = sum(n for n in kept.values() if n >= N * V) / (N * V)   # the [N, V] tensors (not target, scalars)
    assert per_entry == 4                                               # the fp32 log-softmax
    assert per_entry + 8 + 4 <= ACTIVATION_BYTES_PER_TOKEN["vocab"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measuring a pack's peak memory needs CUDA")
def test_fit_pack_size_keeps_the_measured_peak_under_the_budget():
    """A budget for about 3.5 trials (a pack's fixed cost plus 2.5 times what each trial adds, both measured) gives
    a pack smaller than the job whose measured peak fits (fit_pack_size errs small: it scales from the shape
    estimate and from peaks as if memory were proportional to K)."""
    config = SweepConfig(model=GDNConfig(width=128, depth=2), schedule=ScheduleSpec(steps=4, warmup_steps=1,
                         batch_size=8, seq_len=512), data=CORPUS, eval_batches=1)   # a trial's activations dominate
    specs = [TrialSpec(config, lr=1e-2, seed=i) for i in range(8)]
    measure_pack_bytes(specs[:1])              # the process's first pack also allocates what stays (cuBLAS workspace)
    one, two = measure_pack_bytes(specs[:1]), measure_pack_bytes(specs[:2])
    budget = int(one + 2.5 * (two - one))
    print(f"one trial {one / 2**20:.1f} MiB, two {two / 2**20:.1f} MiB, budget {budget / 2**20:.1f} MiB")
    size = fit_pack_size(specs, budget)
    print(f"{size} per pack")
    assert 1 <= size <= 3
    assert measure_pack_bytes(specs[:size]) <= budget


def test_bf16_autocast_logits_equal_the_single_models():
    """Under vmap, conv1d reaches autocast as `convolution` (unlisted on the CPU): gdn.ops.short_conv casts its inputs
    itself. Checked with CPU autocast, bit for bit against each trial's own GDNModel."""
    specs = [TrialSpec(tiny(output_mult=m), lr=1e-2, seed=s, device="cpu") for s, m in ((0, 1.0), (1, 2.0))]
    pack = _Pack(specs)
    pack.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    x, _ = pack.batches(0)
    logits = pack._logits(pack.params, x)                       # before each trial's multiplier: the loss's scale
    for i, spec in enumerate(specs):
        model, _, _ = build_model(spec.config, spec.config.base_width, spec.seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model(x[i])
        assert torch.equal(scaled_logits(logits[i], pack.logit_mult[i]), expected)


def test_cuda_graphs_setting():
    from gdn.trial import uses_cuda_graphs
    cpu = TrialSpec(tiny(), lr=1e-2, device="cpu")
    assert not uses_cuda_graphs(cpu)                                    # CPU packs always run op by op
    assert uses_cuda_graphs(dataclasses.replace(cpu, device="cuda"))
    assert not uses_cuda_graphs(dataclasses.replace(cpu, device="cuda", cuda_graphs=False))
    with pytest.raises(ValueError, match="backend must be one of"):
        TrialSpec(tiny(), lr=1e-2, backend="fast")
    packed = train_packed([dataclasses.replace(cpu, config=tiny(steps=2))], log_every=1)[0]
    assert (packed.trainer, packed.cuda_graphs, packed.backend) == ("pack", False, "auto")   # recorded as run
    assert pack_key(cpu) != pack_key(dataclasses.replace(cpu, backend="chunk"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_graph_replay_gives_the_eager_curves(optimizer):
    """A pack replaying whole steps from a CUDA graph (forward and backward under bf16 autocast, clip, optimizer at
    the scheduled LRs) trains exactly as the same pack run op by op, through the warm-up's schedule, a divergence
    (rows leave, the graph is captured again) and a later step."""
    cfg = tiny(optimizer, steps=12, weight_decay=0.05)          # decay on, for SGD too (its default is none)
    lrs = (1e-3, 3e-3, 3.0) if optimizer == "adamw" else (0.1, 0.3, 500.0)
    specs = [TrialSpec(cfg, lr=lr, seed=0, device="cuda", width=128) for lr in lrs]   # K = 16: Triton
    runs = {}
    for setting in ("1", "0"):
        runs[setting] = train_packed([dataclasses.replace(s, cuda_graphs=setting == "1") for s in specs],
                                     log_every=1)
    for graphed, eager in zip(runs["1"], runs["0"]):
        assert graphed.status == eager.status and graphed.diverged_step == eager.diverged_step
        assert [p.loss for p in graphed.curve] == [p.loss for p in eager.curve]
        assert [p.grad_norm for p in graphed.curve] == [p.grad_norm for p in eager.curve]
    assert runs["1"][2].status == DIVERGED and runs["1"][0].status == COMPLETED


def test_one_input_gemm_packs_to_the_same_curves(monkeypatch):
    """The mixer's input projections as one GEMM (GatedDeltaNet.one_input_gemm) under the pack's vmap: the curves of
    the six-GEMM form, float64."""
    specs = [TrialSpec(tiny(), lr=c["lr"], seed=c["seed"], dtype="float64", device="cpu") for c in CASES["adamw"][:2]]
    runs = []
    for one in (False, True):
        monkeypatch.setattr(GatedDeltaNet, "one_input_gemm", one)
        runs.append(train_packed(specs, log_every=2))
    for six, one in zip(*runs):
        assert one.status == six.status == COMPLETED
        assert max_rel_diff(one, six) < EQUAL_RTOL
