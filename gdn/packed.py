"""Packed training: K trials of one architecture trained as one batched model, in one process on one device.

The model's math is written once, in gdn.model. The K trials' parameters are stacked along a leading trial axis and
GDNModel runs under torch.func.vmap over that axis (functional_call on a parameter-free skeleton): the matmuls become
batched matmuls, and the fused ops (the gated delta rule, RMSNorm, the short conv) fold the trial axis into their
own (gdn.ops.fold), so one kernel call serves all K trials. On CUDA the forward and backward are captured once as a
CUDA graph and replayed each step (gdn.trial.uses_cuda_graphs). Everything a trial owns stays per trial:
- its init: gdn.trial.build_model(config, width, seed), then stacked, so it starts bit-identical to train_trial's;
- its data: corpus.batch(step, seed), exactly the batches train_trial would draw (trials sharing a seed share data);
- its logit multiplier (output_mult may differ between trials), LR, schedule and global-norm gradient clip;
- its optimizer state: torch.optim's foreach AdamW / SGD-Nesterov replayed on the stacked tensors (PackedOptimizer);
- its divergence verdict, by train_trial's rule: a diverged trial's rows leave the pack and the others go on.

Trials that can share a pack have equal `pack_key`s. plan_packs splits a job's trials into packs that fit the
GPU: an estimate from the shapes, verified by running two steps and reading the allocator's peak.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from gdn.config import count_params
from gdn.optim import CLIP_EPS, lr_at, param_groups
from gdn.parametrization import Parametrization
from gdn.spec import CurvePoint, OptimizerSpec, TrialCancelled, TrialResult, TrialSpec
from gdn.trial import TrialLog, build_model, is_log_point, precision, resolve_device, trial_corpus, uses_cuda_graphs

GRAPH_WARMUP_STEPS = 2   # eager forward-backward passes on a side stream before a capture
MEMORY_HEADROOM = 0.9    # fit_pack_size fills at most this share of what the process can still allocate
# estimate_trial_bytes: activation bytes per token, per layer x width and per vocab entry (bf16 autocast, fused
# norms and conv). Fitted to the peaks of packs of 16 at d = 128, 256, 512 on an H100 (2026-11-27, docs/benchmarks.md,
# Packed training), rounded up: the estimate is 6-14 % above those peaks. plan_packs measures anyway.
ACTIVATION_BYTES_PER_TOKEN = {"width": 64, "vocab": 192}


# ---- which trials can share a pack ---------------------------------------------------------------------------

def pack_key(spec: TrialSpec) -> tuple:
    """Trials with equal keys can be trained in one pack: everything but the LR, the seed and the base width's output
    and init multipliers is shared (architecture, width, parametrization, optimizer, schedule, data, and how they
    run). The init multiplier only changes a trial's starting point, which each trial draws for itself."""
    return (dataclasses.replace(spec.config, output_mult=1.0, init_mult=1.0), spec.at_width, spec.device, spec.dtype,
            spec.backend, spec.cuda_graphs)


def _check_packable(specs: list[TrialSpec]) -> None:
    if not specs:
        raise ValueError("train_packed needs at least one trial")
    first = pack_key(specs[0])
    for i, spec in enumerate(specs[1:], start=1):
        if pack_key(spec) != first:
            fields = ("config (but output_mult and init_mult)", "width", "device", "dtype", "backend", "cuda_graphs")
            differ = [name for name, a, b in zip(fields, first, pack_key(spec)) if a != b]
            raise ValueError(f"trial {i} cannot share a pack with trial 0: its {', '.join(differ)} differ(s); "
                             "group trials by gdn.packed.pack_key first")


# ---- the optimizer -------------------------------------------------------------------------------------------

class _RowViews:
    """Per-trial views of stacked tensors ([t0[0], t0[1], ..., t1[0], ...]), made once per tensor: a view costs
    microseconds and a pack updates thousands of them each step. Valid while the tensors are updated in place."""

    def __init__(self):
        self._views: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def __call__(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        rows = []
        for t in tensors:
            cached = self._views.get(id(t))
            if cached is None or cached[0] is not t:
                cached = self._views[id(t)] = (t, t.unbind(0))
            rows.extend(cached[1])
        return rows

    def clear(self) -> None:
        self._views.clear()


class PackedOptimizer:
    """torch.optim.AdamW / SGD (Nesterov), foreach, with the table's param groups, for trials stacked along dim 0.

    The steps replay torch.optim's _multi_tensor_adam (decoupled weight decay) and _multi_tensor_sgd op for op:
    ops whose scalars all trials share run on the stacked tensors, the LR-dependent ones on per-trial slices with
    per-trial scalars. Elementwise ops do not care how tensors are grouped, so each trial gets torch's arithmetic.
    """

    def __init__(self, skeleton: torch.nn.Module, parametrization: Parametrization, spec: OptimizerSpec,
                 width_mult: float):
        name_of = {id(p): n for n, p in skeleton.named_parameters()}
        groups = param_groups(skeleton, parametrization.groups(width_mult, spec.name), 1.0, spec.weight_decay)
        self.groups = [(g["lr_mult"], g["weight_decay"], [name_of[id(p)] for p in g["params"]]) for g in groups]
        self.spec = spec
        self.state: dict[str, dict[str, torch.Tensor]] = {}   # param name -> buffers, stacked like the param
        self.steps = 0                                         # updates done (all trials of a pack step together)
        self.rows = _RowViews()                                # of the parameters and the state buffers

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], base_lrs: list[float]) -> None:
        """One update; base_lrs[r] is trial row r's scheduled LR for a group of LR multiplier 1."""
        self.steps += 1
        for lr_mult, weight_decay, names in self.groups:
            lrs = [base_lr * lr_mult for base_lr in base_lrs]       # as gdn.optim.set_lr
            update = self._adamw if self.spec.name == "adamw" else self._sgd
            update([params[n] for n in names], [self.state.setdefault(n, {}) for n in names], lrs, weight_decay)

    def _adamw(self, ps, states, lrs, weight_decay) -> None:
        beta1, beta2 = self.spec.betas
        grads = [p.grad for p in ps]
        for p, s in zip(ps, states):
            if not s:
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        if weight_decay != 0:
            torch._foreach_mul_(self.rows(ps), [1 - lr * weight_decay for _ in ps for lr in lrs])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** float(self.steps)
        bias_correction2 = 1 - beta2 ** float(self.steps)
        step_sizes = [(lr / bias_correction1) * -1 for _ in ps for lr in lrs]
        denom = torch._foreach_sqrt(self.rows(exp_avg_sqs))          # per trial row, as are the ops below
        torch._foreach_div_(denom, [bias_correction2 ** 0.5] * len(denom))
        torch._foreach_add_(denom, self.spec.eps)
        torch._foreach_addcdiv_(self.rows(ps), self.rows(exp_avgs), denom, step_sizes)

    def _sgd(self, ps, states, lrs, weight_decay) -> None:
        momentum = self.spec.momentum
        grads = [p.grad for p in ps]
        if weight_decay != 0:
            grads = torch._foreach_add(grads, ps, alpha=weight_decay)
        if momentum != 0:
            if all(states):
                bufs = [s["momentum_buffer"] for s in states]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1)          # dampening 0
            else:
                bufs = [g.detach().clone() for g in grads]
                for s, buf in zip(states, bufs):
                    s["momentum_buffer"] = buf
            torch._foreach_add_(grads, bufs, alpha=momentum)      # Nesterov (gdn.optim: nesterov iff momentum > 0)
        R = len(lrs)
        p_rows, g_rows = self.rows(ps), [row for g in grads for row in g.unbind(0)]
        for r, lr in enumerate(lrs):                               # alpha is one scalar per call: one call per trial
            torch._foreach_add_(p_rows[r::R], g_rows[r::R], alpha=-lr)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the trial rows in `index` (the others left the pack)."""
        self.rows.clear()
        for buffers in self.state.values():
            for name, buf in buffers.items():
                buffers[name] = buf[index]


@torch.no_grad()
def clip_grad_norm_per_trial(params: list[torch.Tensor], max_norm: float,
                             weights: torch.Tensor | None = None) -> torch.Tensor:
    """gdn.optim.clip_grad_norm for each trial row on its own: returns the (R,) global grad norms before clipping
    (of the gradients weighted by `weights`, a (P,) tensor on the gradients' device, if given) and scales each row's
    gradients by min(1, max_norm / (norm + eps)). max_norm 0 disables clipping."""
    grads = [p.grad for p in params]
    R = grads[0].shape[0]
    rows = [row for g in grads for row in g.unbind(0)]                  # [param][trial] order
    per_param = torch.stack(torch._foreach_norm(rows, 2.0)).view(len(grads), R)   # (P, R)
    if weights is not None:
        per_param = per_param * weights[:, None]
    total = torch.linalg.vector_norm(per_param.t().contiguous(), 2.0, dim=1)      # (R,)
    coef = ((max_norm if max_norm > 0 else math.inf) / (total + CLIP_EPS)).clamp(max=1.0)
    for r in range(R):
        torch._foreach_mul_(rows[r::R], coef[r])
    return total


# ---- one pack of trials, in training -------------------------------------------------------------------------

class _Pack:
    """K trials of one architecture: stacked parameters, their optimizer, the vmapped loss, and which spec each
    row is. Rows leave the pack (drop) when their trial ends early."""

    def __init__(self, specs: list[TrialSpec]):
        _check_packable(specs)
        self.specs = specs
        cfg = specs[0].config
        self.schedule = cfg.schedule
        self.device = resolve_device(specs[0].device)
        self.corpus = trial_corpus(cfg)
        built = [build_model(spec.config, spec.at_width, spec.seed, spec.backend) for spec in specs]
        models = [model for model, _, _ in built]
        _, parametrization, width_mult = built[0]
        dtype, self.autocast = precision(specs[0], self.device)

        # The skeleton carries the architecture and no weights; its logit multiplier is 1, each trial's own
        # multiplier is applied in _trial_logits (output_mult may differ between trials).
        skeleton = copy.deepcopy(models[0]).to("meta")
        skeleton.mult = dataclasses.replace(skeleton.mult, logits=1.0)
        self.skeleton = skeleton
        self.num_params = models[0].num_params()
        stacked, _ = stack_module_state(models)                      # name -> (K, *shape)
        self.params = {n: p.detach().to(self.device, dtype).requires_grad_() for n, p in stacked.items()}
        self.logit_mult = torch.tensor([m.mult.logits for m in models], dtype=dtype, device=self.device)
        self.optimizer = PackedOptimizer(skeleton, parametrization, cfg.optimizer, width_mult)
        weights = parametrization.clip_weights(skeleton, cfg.optimizer.name, width_mult)
        # made once, not every step; None where every weight is 1 (the plain global norm: SP, AdamW, m = 1)
        self.clip_weights = (None if all(w == 1.0 for w in weights)
                             else torch.tensor(weights, dtype=dtype, device=self.device))
        self.rows = list(range(len(specs)))                          # spec index of each row
        self.use_graphs = uses_cuda_graphs(specs[0])
        self._graph = None                                           # (graph, static x, static y, static losses)
        self._logits = vmap(self._trial_logits, in_dims=(0, 0, 0))
        self._val_logits = vmap(self._trial_logits, in_dims=(0, 0, None))

    def _trial_logits(self, params, logit_mult, x):
        """One trial's float32 logits (B, T, vocab) for tokens x (B, T), as train_trial computes them."""
        with self.autocast():
            logits = functional_call(self.skeleton, params, (x,))    # (B, T, vocab)
        return (logits * logit_mult).float()

    @staticmethod
    def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(R,) mean cross-entropies of logits (R, B, T, vocab) against y (R, B, T) or (B, T). One call per row,
        outside vmap: the batched rule reduces in another order, which moves float32 losses by an ulp."""
        ys = y if y.dim() == 3 else y.expand(logits.shape[0], *y.shape)
        return torch.stack([F.cross_entropy(lg.flatten(0, 1), yr.flatten()) for lg, yr in zip(logits, ys)])

    def batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's training batch `step`: x, y (R, B, T); rows of one seed get the same batch. On CUDA the copy
        goes from pinned memory without blocking, so the host can queue this step while the last one runs."""
        sched = self.schedule
        by_seed = {}
        for r in self.rows:
            seed = self.specs[r].seed
            if seed not in by_seed:
                by_seed[seed] = self.corpus.batch(step, seed, sched.batch_size, sched.seq_len)
        x = torch.stack([by_seed[self.specs[r].seed][0] for r in self.rows])   # (R, B, T)
        y = torch.stack([by_seed[self.specs[r].seed][1] for r in self.rows])   # (R, B, T)
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """One update of every row: (losses (R,), grad norms (R,), base LRs), tensors not synced."""
        sched = self.schedule
        base_lrs = [lr_at(step, self.specs[r].lr, sched.warmup_steps, sched.steps, sched.min_lr) for r in self.rows]
        x, y = self.batches(step)
        losses = self._graphed_losses_and_grads(x, y) if self.use_graphs else self._losses_and_grads(x, y)
        grad_norms = clip_grad_norm_per_trial(list(self.params.values()), self.specs[0].config.optimizer.grad_clip,
                                              self.clip_weights)
        self.optimizer.step(self.params, base_lrs)
        return losses, grad_norms, base_lrs

    def _losses_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each row's training loss (R,) on batch x, y; leaves each parameter's gradient in its .grad."""
        losses = self._losses(self._logits(self.params, self.logit_mult, x), y)   # (R,)
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()                                        # rows are independent: d sum / d loss_r = 1
        return losses.detach()

    def _graphed_losses_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """_losses_and_grads replayed from a CUDA graph: the forward and backward are queued by the driver in one
        call instead of op by op from Python, which under vmap cost more host time than the device needed (the
        pack was host-bound from K = 8 at d = 256; docs/benchmarks.md, Packed training). Same kernels, same
        numbers. Captured on first use and again after rows leave the pack (the shapes change)."""
        if self._graph is None:
            try:
                self._graph = self._capture(x, y)
            except RuntimeError as e:                                 # torch.AcceleratorError is one
                warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0]}); this "
                              "pack runs op by op", RuntimeWarning, stacklevel=2)
                self.use_graphs = False
                return self._losses_and_grads(x, y)
        graph, static_x, static_y, static_losses = self._graph
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return static_losses.clone()                                 # the next replay overwrites static_losses

    def _capture(self, x: torch.Tensor, y: torch.Tensor):
        static_x, static_y = x.clone(), y.clone()
        # Warm-up on a side stream, as CUDA graph capture requires: Triton compiles, cuBLAS and cuDNN pick their
        # kernels. The gradients it leaves are overwritten by the replay that follows the capture.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._losses_and_grads(static_x, static_y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        for p in self.params.values():
            p.grad = None                                             # the captured backward allocates them
        # The graph allocates from a pool of its own, which cannot reuse the blocks the warm-up left cached, and an
        # allocation that fails during capture cannot free them (that would synchronize): free them now.
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            losses = self._losses_and_grads(static_x, static_y)
        return graph, static_x, static_y, losses

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Each row's mean validation loss over the fixed validation slice, as gdn.train.evaluate computes it."""
        cfg = self.specs[0].config
        val = self.corpus.val_batches(cfg.eval_batches, self.schedule.batch_size, self.schedule.seq_len, self.device)
        self.skeleton.eval()
        totals = [0.0] * len(self.rows)
        for x, y in val:
            for r, loss in enumerate(self._losses(self._val_logits(self.params, self.logit_mult, x), y).tolist()):
                totals[r] += loss
        self.skeleton.train()
        return [total / len(val) for total in totals]

    def close(self) -> None:
        """Free the device memory the pack holds beyond its parameters and optimizer state now: the CUDA graph's
        private pool keeps every activation of a step, and the pack is in a reference cycle (its vmapped methods),
        which only the cyclic garbage collector would break, some time later."""
        self._graph = None
        for p in self.params.values():
            p.grad = None

    def drop(self, leaving: list[int]) -> None:
        """Rows `leaving` (spec indices) leave the pack: their parameters and optimizer state are freed."""
        keep = [i for i, r in enumerate(self.rows) if r not in leaving]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)   # long even when empty: all left
        self.params = {n: p.detach()[index].requires_grad_() for n, p in self.params.items()}
        self.logit_mult = self.logit_mult[index]
        self.optimizer.keep(index)
        self.rows = [self.rows[i] for i in keep]
        self._graph = None                                           # captured for the old shapes and tensors


# ---- the public entry ----------------------------------------------------------------------------------------

def train_packed(specs: list[TrialSpec], progress: Callable[[int, CurvePoint], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, log_every: int = 10,
                 on_result: Callable[[int, TrialResult], None] | None = None) -> list[TrialResult]:
    """Train every spec (one architecture, see pack_key) as one pack; results in the order of `specs`.

    Each trial's curve, divergence verdict and final validation loss are those train_trial(spec) gives, up to
    rounding. progress(i, point) gets trial i's curve points; on_result(i, result) is called as soon as trial i
    has a result (a diverged trial mid-run, the others at the end); should_stop() is asked at every log point and
    raises TrialCancelled for the whole pack (results already passed to on_result stand).
    """
    pack = _Pack(specs)
    try:
        return _train(pack, specs, progress, should_stop, log_every, on_result)
    finally:
        pack.close()


def _train(pack: _Pack, specs: list[TrialSpec], progress, should_stop, log_every: int, on_result) -> list[TrialResult]:
    sched = pack.schedule
    start = time.perf_counter()
    logs = [TrialLog(spec, num_params=pack.num_params, data_sha256=pack.corpus.sha256, device=pack.device,
                     trainer="pack", cuda_graphs=pack.use_graphs, start=start) for spec in specs]
    results: list[TrialResult | None] = [None] * len(specs)
    window_losses: list[torch.Tensor] = []

    def finish(i: int, result: TrialResult) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    for step in range(sched.steps):
        losses, grad_norms, base_lrs = pack.train_step(step)
        window_losses.append(losses)

        done = step + 1
        if not is_log_point(done, sched.steps, log_every):
            continue
        window = torch.stack(window_losses).double().t().contiguous().cpu()   # (R, steps in the window)
        window_losses.clear()
        norms = grad_norms.tolist()
        seconds = time.perf_counter() - start
        diverged = []
        for row, i in enumerate(pack.rows):
            point, why = logs[i].point(done, window[row], base_lrs[row], norms[row], seconds)
            if progress is not None:
                progress(i, point)
            if why:
                finish(i, logs[i].diverged(done, why))
                diverged.append(i)
        if diverged:
            pack.drop(diverged)
        if not pack.rows:
            break
        if should_stop is not None and should_stop():
            raise TrialCancelled(f"stopped at step {done}")

    if pack.rows:
        for i, val_loss in zip(pack.rows, pack.evaluate()):
            finish(i, logs[i].finished(val_loss))
    return results


# ---- how many trials fit one GPU -----------------------------------------------------------------------------

def estimate_trial_bytes(spec: TrialSpec) -> int:
    """Device memory one trial adds to a pack, from its shapes: parameters, gradients, optimizer state and the
    optimizer's temporaries, plus the activations autograd keeps for batch x seq_len tokens."""
    cfg, sched = spec.config, spec.config.schedule
    model = cfg.model_at(spec.at_width)
    value_bytes = 8 if spec.dtype == "float64" else 4
    states = 2 if cfg.optimizer.name == "adamw" else int(cfg.optimizer.momentum > 0)
    weights = count_params(model) * value_bytes * (3 + states)       # param, grad, one temporary, the state
    tokens = sched.batch_size * sched.seq_len
    per_token = (ACTIVATION_BYTES_PER_TOKEN["width"] * model.depth * model.width
                 + ACTIVATION_BYTES_PER_TOKEN["vocab"] * model.vocab_size)
    return weights + tokens * per_token * value_bytes // 4


def _free_cuda_bytes(device: torch.device) -> int:
    """What this process could still allocate: free device memory plus what its caching allocator holds unused."""
    return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def measure_pack_bytes(specs: list[TrialSpec]) -> int | None:
    """CUDA memory a steady-state training step of `specs` as one pack allocates at its peak (the second step, once
    the optimizer state exists), beyond what was allocated before; None if it runs out of memory."""
    device = resolve_device(specs[0].device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    pack = None
    try:
        pack = _Pack(specs)
        pack.train_step(0)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        pack.train_step(1)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        if pack is not None:
            pack.close()
        del pack
        torch.cuda.empty_cache()


def fit_pack_size(specs: list[TrialSpec], budget_bytes: int | None = None, max_measurements: int = 4) -> int:
    """The largest pack of the first n of `specs` (one pack_key) whose training step fits `budget_bytes` of CUDA
    memory (default: MEMORY_HEADROOM of what this process could still allocate): estimated from the shapes, then
    measured and corrected."""
    _check_packable(specs)
    device = resolve_device(specs[0].device)
    if device.type != "cuda":
        return len(specs)
    if budget_bytes is None:
        budget_bytes = int(_free_cuda_bytes(device) * MEMORY_HEADROOM)
    size = max(1, min(len(specs), budget_bytes // estimate_trial_bytes(specs[0])))
    fits = 0                                                         # the largest size measured to fit
    for _ in range(max_measurements):
        peak = measure_pack_bytes(specs[:size])
        if peak is not None and peak <= budget_bytes:
            fits = max(fits, size)
            if size == len(specs):
                break
            scaled = min(len(specs), int(size * budget_bytes / peak))  # memory grows about linearly in K
        else:
            scaled = size // 2 if peak is None else min(size - 1, int(size * budget_bytes / peak))
        if scaled <= fits or scaled == size or scaled < 1:
            break
        size = scaled
    if fits == 0:
        raise RuntimeError(f"one trial does not fit {budget_bytes / 2**30:.1f} GiB of GPU memory")
    return fits


def plan_packs(specs: list[TrialSpec], budget_bytes: int | None = None,
               pack_size: Callable[[list[TrialSpec]], int] | None = None) -> list[list[int]]:
    """Split a job's trials into packs: lists of indices into `specs`, each list one pack_key, no pack larger
    than what fits (fit_pack_size, or `pack_size` when given), the trials of a key spread evenly over its packs."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(pack_key(spec), []).append(i)
    packs = []
    for members in groups.values():
        group = [specs[i] for i in members]
        size = pack_size(group) if pack_size is not None else fit_pack_size(group, budget_bytes)
        n_packs = -(-len(members) // size)
        packs.extend(members[j::n_packs] for j in range(n_packs))
    return packs
