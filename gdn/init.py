"""Initialising a model by the table: each parameter drawn as its role's Init says (gdn.parametrization).

The table decides the kind and the std at a width; this file only draws the numbers, the same way for every preset.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gdn.parametrization import A_RANGE, DT_FLOOR, DT_RANGE, Init, Parametrization, role_of


@torch.no_grad()
def init_model(model: nn.Module, parametrization: Parametrization, width_mult: float,
               generator: torch.Generator | None = None) -> None:
    """Initialise every parameter of `model` by its role, at width_mult."""
    for name, p in model.named_parameters():
        role = role_of(name, p)
        init_tensor(p, name, parametrization.rule(role).init, parametrization.init_std(role, width_mult), width_mult,
                    generator)


def init_tensor(p: torch.Tensor, name: str, init: Init, std: float | None, width_mult: float,
                generator: torch.Generator | None, bound: float | None = None) -> None:
    """Draw p as `init` says; std is the table's (Parametrization.init_std) for the normal kind; bound, when given,
    is conv_uniform's (a recommendation's init_bound) instead of the one computed from width_mult."""
    if init.kind == "normal":
        p.normal_(0.0, std, generator=generator)
    elif init.kind == "zeros":
        p.zero_()
    elif init.kind == "ones":
        p.fill_(1.0)
    elif init.kind == "conv_uniform":
        if bound is None:
            bound = width_mult ** init.std_exp / math.sqrt(p[0].numel())   # fan_in of a depthwise conv = kernel size
        p.uniform_(-bound, bound, generator=generator)
    elif init.kind == "gdn_gate" and name.endswith("A_log"):
        A = torch.empty(p.shape, dtype=torch.float32, device=p.device).uniform_(0.0, A_RANGE[1], generator=generator)
        p.copy_(A.clamp_min(A_RANGE[0]).log())
    elif init.kind == "gdn_gate" and name.endswith("dt_bias"):
        u = torch.rand(p.shape, generator=generator, device=p.device, dtype=torch.float32)
        lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
        dt = (u * (hi - lo) + lo).exp().clamp_min(DT_FLOOR)
        p.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
    else:
        raise ValueError(f"unknown init kind {init.kind!r}")
