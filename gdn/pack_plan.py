"""How a job's trials split into packs that fit one GPU: an estimate of a trial's memory from its shapes, verified by
running three steps of the pack and reading the allocator's peak (gdn.packed trains the packs)."""
from __future__ import annotations

from typing import Callable

import torch

from gdn.config import count_params
from gdn.packed import _Pack, check_packable, pack_key
from gdn.spec import TrialSpec
from gdn.trial import resolve_device

MEMORY_HEADROOM = 0.9    # fit_pack_size fills at most this share of what the process can still allocate
# estimate_trial_bytes: activation bytes per token, per layer x width, per vocab entry, and a constant (bf16 autocast,
# fused norms and conv). Fitted to the peaks of packs of 16 at d = 128, 256, 512, vocab 256, on an H100 (2026-11-27,
# docs/benchmarks.md, Packed training), rounded up: the estimate is 6-14 % above those peaks. That fit put 192 bytes
# on each vocab entry, which at vocab 256 cannot be told from a constant, and at 32k made a trial 11x too large. Per
# vocab entry the loss (gdn.ops.cross_entropy's reference) keeps an fp32 log-softmax (4 bytes), and its backward
# adds two fp32 gradients (8) beside the bf16 logits and theirs (4): 16. The rest of the fitted 192 x 256 is the
# constant, so the estimate at vocab 256 is the fitted one. plan_packs measures anyway.
ACTIVATION_BYTES_PER_TOKEN = {"width": 64, "vocab": 16, "constant": (192 - 16) * 256}


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
                 + ACTIVATION_BYTES_PER_TOKEN["vocab"] * model.vocab_size + ACTIVATION_BYTES_PER_TOKEN["constant"])
    return weights + tokens * per_token * value_bytes // 4


def _free_cuda_bytes(device: torch.device) -> int:
    """What this process could still allocate: free device memory plus what its caching allocator holds unused."""
    return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def measure_pack_bytes(specs: list[TrialSpec]) -> int | None:
    """CUDA memory a steady-state training step of `specs` as one pack allocates at its peak (the third step: the
    first runs op by op, the second captures the CUDA graph), beyond what was allocated before; None if it runs out
    of memory."""
    device = resolve_device(specs[0].device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    pack = None
    try:
        pack = _Pack(specs)
        pack.train_step(0)
        pack.train_step(1)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        pack.train_step(2)
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
    check_packable(specs)
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
