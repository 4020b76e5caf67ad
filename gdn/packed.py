"""Packed training: K trials of one architecture trained as one batched model, in one process on one device.

The model's math is written once, in gdn.model. The K trials' parameters are stacked along a leading trial axis and
GDNModel runs under torch.func.vmap over that axis (functional_call on a parameter-free skeleton): the matmuls become
batched matmuls, and the fused ops (the gated delta rule, RMSNorm, the short conv) fold the trial axis into their
own (gdn.ops.backend.run_kernel), so one kernel call serves all K trials. On CUDA a whole step (forward, backward,
gradient clip and optimizer update) is captured once as a CUDA graph and replayed (gdn.trial.uses_cuda_graphs).
Everything a trial owns stays per trial:
- its init: gdn.trial.build_model(config, width, seed), then stacked, so it starts bit-identical to train_trial's;
- its data: corpus.batch(step, seed), exactly the batches train_trial would draw (trials sharing a seed share data);
- its logit multiplier (output_mult may differ between trials), LR, schedule and global-norm gradient clip;
- its optimizer state: torch.optim's foreach AdamW / SGD-Nesterov replayed on the stacked tensors (gdn.packed_optim);
- its divergence verdict, by train_trial's rule: a diverged trial's rows leave the pack and the others go on.

Trials that can share a pack have equal `pack_key`s. gdn.pack_plan.plan_packs splits a job's trials into packs that fit the
GPU: an estimate from the shapes, verified by running three steps and reading the allocator's peak.
"""
from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from typing import Callable

import torch
from torch.func import functional_call, stack_module_state, vmap

from gdn.ops.cross_entropy import cross_entropy
from gdn.optim import lr_at
from gdn.packed_optim import PackedOptimizer, clip_grad_norm_per_trial
from gdn.spec import CurvePoint, TrialCancelled, TrialResult, TrialSpec
from gdn.trial import (TrialLog, build_model, is_log_point, loss_backend, precision, resolve_device, trial_corpus,
                       uses_cuda_graphs)

GRAPH_WARMUP_STEPS = 2   # eager forward-backward passes on a side stream before a capture


# ---- which trials can share a pack ---------------------------------------------------------------------------

def pack_key(spec: TrialSpec) -> tuple:
    """Trials with equal keys can be trained in one pack: everything but the LR, the seed and the base width's output
    and init multipliers is shared (architecture, width, parametrization, optimizer, schedule, data, and how they
    run). The init multiplier only changes a trial's starting point, which each trial draws for itself."""
    return (dataclasses.replace(spec.config, output_mult=1.0, init_mult=1.0), spec.at_width, spec.device, spec.dtype,
            spec.backend, spec.cuda_graphs)


def check_packable(specs: list[TrialSpec]) -> None:
    if not specs:
        raise ValueError("train_packed needs at least one trial")
    first = pack_key(specs[0])
    for i, spec in enumerate(specs[1:], start=1):
        if pack_key(spec) != first:
            fields = ("config (but output_mult and init_mult)", "width", "device", "dtype", "backend", "cuda_graphs")
            differ = [name for name, a, b in zip(fields, first, pack_key(spec)) if a != b]
            raise ValueError(f"trial {i} cannot share a pack with trial 0: its {', '.join(differ)} differ(s); "
                             "group trials by gdn.packed.pack_key first")


# ---- one pack of trials, in training -------------------------------------------------------------------------

class _Pack:
    """K trials of one architecture: stacked parameters, their optimizer, the vmapped loss, and which spec each
    row is. Rows leave the pack (drop) when their trial ends early."""

    # False: the graph holds the forward and backward only and the update runs op by op after each replay, as before
    # issue 21; benchmarks/packing.py times it as the baseline of the graphed update
    update_in_graph = True

    def __init__(self, specs: list[TrialSpec]):
        check_packable(specs)
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
        # multiplier is the scale of its loss (_losses; output_mult may differ between trials).
        skeleton = copy.deepcopy(models[0]).to("meta")
        skeleton.mult = dataclasses.replace(skeleton.mult, logits=1.0)
        self.skeleton = skeleton
        self.num_params = models[0].num_params()
        stacked, _ = stack_module_state(models)                      # name -> (K, *shape)
        self.params = {n: p.detach().to(self.device, dtype).requires_grad_() for n, p in stacked.items()}
        self.logit_mult = torch.tensor([m.mult.logits for m in models], dtype=dtype, device=self.device)
        self.optimizer = PackedOptimizer(skeleton, parametrization, cfg.optimizer, width_mult)
        self.optimizer.init_state(self.params)
        self.base_lr = torch.zeros(len(specs), dtype=torch.float64, device=self.device)   # the step's, per row
        weights = parametrization.clip_weights(skeleton, cfg.optimizer.name, width_mult)
        # made once, not every step; None where every weight is 1 (the plain global norm: SP, AdamW, m = 1)
        self.clip_weights = None if all(w == 1.0 for w in weights) else weights
        self.loss_backend = loss_backend(specs[0])
        self.rows = list(range(len(specs)))                          # spec index of each row
        self.use_graphs = uses_cuda_graphs(specs[0])
        self._graph = None                             # (graph, static x, static y, static losses, static norms)
        self._update_ran = False                       # the update's kernels have run once outside a capture
        self._logits = vmap(self._trial_logits, in_dims=(0, 0))
        self._val_logits = vmap(self._trial_logits, in_dims=(0, None))

    def _trial_logits(self, params, x):
        """One trial's logits (B, T, vocab) for tokens x (B, T), in the forward's dtype (bf16 under autocast),
        before the trial's logit multiplier: its loss applies it (_losses)."""
        with self.autocast():
            return functional_call(self.skeleton, params, (x,))       # (B, T, vocab)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(R,) mean cross-entropies of each row's logits (R, B, T, vocab) times its logit multiplier, against y
        (R, B, T) or (B, T). Outside vmap, each row a group of the loss (gdn.ops.cross_entropy): its reference takes
        them one at a time (vmap's batched rule reduces in another order, which moves float32 losses by an ulp), its
        kernel all at once."""
        ys = y if y.dim() == 3 else y.expand(logits.shape[0], *y.shape)
        return cross_entropy(logits.flatten(1, 2), ys.flatten(1), scale=self.logit_mult,
                             backend=self.loss_backend)                 # (R,)

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
        host = torch.tensor(base_lrs, dtype=torch.float64)
        # from pinned memory the copy does not block the host (the caching host allocator holds the buffer until done)
        self.base_lr.copy_(host.pin_memory() if self.device.type == "cuda" else host, non_blocking=True)
        x, y = self.batches(step)
        losses, grad_norms = self._step(x, y)
        return losses, grad_norms, base_lrs

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on batch x, y at the LRs in self.base_lr: (losses (R,), grad norms (R,)), replayed from the CUDA
        graph where the pack has one, else op by op."""
        replayed = self._graphed_step(x, y) if self.use_graphs else None
        if replayed is not None:
            return replayed
        return self._losses_and_grads(x, y), self._update()

    def _update(self) -> torch.Tensor:
        """Clip each row's gradients and step the optimizer at the LRs in self.base_lr; returns the (R,) grad norms
        before clipping. Device ops only, the same every step (no host sync, no new scalars), so a graph can hold it."""
        grad_norms = clip_grad_norm_per_trial(list(self.params.values()), self.specs[0].config.optimizer.grad_clip,
                                              self.clip_weights)
        self.optimizer.step(self.params, self.base_lr)
        self._update_ran = True
        return grad_norms

    def _losses_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each row's training loss (R,) on batch x, y; leaves each parameter's gradient in its .grad."""
        losses = self._losses(self._logits(self.params, x), y)      # (R,)
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()                                        # rows are independent: d sum / d loss_r = 1
        return losses.detach()

    def _graphed_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """_losses_and_grads and _update replayed from one CUDA graph: the whole step is queued by the driver in one
        call instead of op by op from Python, which under vmap cost more host time than the device needed (the
        pack was host-bound from K = 8 at d = 256; docs/benchmarks.md, Packed training), and the clip and optimizer,
        about a hundred foreach launches, cost host time at every size. Same kernels, same numbers. The first step
        runs op by op (it loads the update's kernels, which a capture must not do); the graph is captured at the
        next, and again after rows leave the pack (the shapes change). None where nothing was replayed (that first
        step, or a failed capture): the caller runs the step op by op."""
        if self._graph is None:
            if not self._update_ran:
                return None
            try:
                self._graph = self._capture(x, y)
            except RuntimeError as e:                                 # torch.AcceleratorError is one
                warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0]}); this "
                              "pack runs op by op", RuntimeWarning, stacklevel=2)
                self.use_graphs = False
                return None
        graph, static_x, static_y, static_losses, static_norms = self._graph
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        if not self.update_in_graph:
            return static_losses.clone(), self._update()
        return static_losses.clone(), static_norms.clone()           # the next replay overwrites both

    def _capture(self, x: torch.Tensor, y: torch.Tensor):
        static_x, static_y = x.clone(), y.clone()
        # Warm-up on a side stream, as CUDA graph capture requires: Triton compiles, cuBLAS and cuDNN pick their
        # kernels. The gradients it leaves are overwritten by the replay that follows the capture; it does not
        # update (the update's kernels ran in an earlier step, _step), so no step is taken twice.
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
            norms = self._update() if self.update_in_graph else None
        return graph, static_x, static_y, losses, norms

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Each row's mean validation loss over the fixed validation slice, as gdn.train.evaluate computes it."""
        cfg = self.specs[0].config
        val = self.corpus.val_batches(cfg.eval_batches, self.schedule.batch_size, self.schedule.seq_len, self.device)
        self.skeleton.eval()
        totals, n = [0.0] * len(self.rows), 0
        for x, y in val:                    # streamed: one batch on the device at a time
            for r, loss in enumerate(self._losses(self._val_logits(self.params, x), y).tolist()):
                totals[r] += loss
            n += 1
        self.skeleton.train()
        return [total / n for total in totals]

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
        self.base_lr = self.base_lr[index]
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
