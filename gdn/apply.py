"""Apply a recommendation to a model: check its shapes, draw its init, install its forward multipliers, give the
optimizer groups. Works on our GDNModel and on fla's GatedDeltaNetForCausalLM (a recommendation describes our
model; fla's differs in ways this module checks or bridges, below).

What fla does differently, and how it is bridged:
  * fla initialises every Linear, Conv1d and Embedding N(0, initializer_range) whatever the width: redrawn here,
    every parameter by its role, exactly as gdn.init does.
  * fla's LM has no logit multiplier: a forward hook on the final norm multiplies its output (the readout is linear
    in it, so this is the logit multiplier, and it survives fused linear cross-entropy, which reads that output).
  * fla's GatedDeltaNet has no `scale` argument (its kernel uses K^-1/2): o_norm is an RMSNorm applied per head to
    o, and rmsnorm(c * o, eps) == rmsnorm(o, eps / c^2), so the scale (c = gdn_scale * sqrt(K) times fla's) is folded
    into each layer's o_norm.eps, exact in real arithmetic.
  * fla options deltamu's model does not have (grouped value heads, no or sigmoid output gate, negative eigenvalues,
    no short conv, softmax-attention layers, attention residuals) are errors, never silently mis-scaled.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gdn.fla_config import fla_unsupported
from gdn.init import init_tensor
from gdn.model import GDNModel
from gdn.parametrization import ForwardMultipliers, Init, role_of
from gdn.recommend import param_groups, recommendation_from_dict
from gdn.spec import Recommendation

_HOOK = "_deltamu_logit_hook"        # the handle of the installed logit hook, on the final norm module
_BASE_EPS = "_deltamu_base_eps"      # an o_norm's eps before the gdn scale was folded into it

# The shapes a recommendation's target_model states and apply compares (conv_size and norm_eps: newer answers).
_COMPARED = ("width", "depth", "num_heads", "head_k_dim", "head_v_dim", "mlp_hidden", "vocab_size",
             "tie_embeddings", "conv_size", "norm_eps")


def apply(model: nn.Module, recommendation: Recommendation | dict, optimizer: torch.optim.Optimizer | None = None,
          *, generator: torch.Generator | None = None, init: bool = True) -> list[dict]:
    """Make `model` (our GDNModel or fla's GatedDeltaNetForCausalLM) the model `recommendation` describes, and
    return its torch optimizer param groups (gdn.recommend.param_groups: per-group lr, weight decay, clip weight).

    1. Checks the model against recommendation.target_model (width, depth, heads, head dims, MLP hidden, vocab,
       tying, conv size, norm eps) and raises one ValueError listing every difference; fla options deltamu cannot
       represent (num_v_heads != num_heads, use_gate=False, a sigmoid output gate, allow_neg_eigval, no short conv,
       softmax-attention layers, attention residuals, any parameter without a role) are errors naming the tensors.
    2. init=True: draws every parameter by its role, as gdn.init.init_tensor does, from the recommendation's kinds,
       stds and bounds (`generator` seeds it). Pass init=False to re-apply 3. to a trained or loaded model.
    3. Installs the forward multipliers: on a GDNModel its `mult` and each layer's `scale`; on an fla model a forward
       hook on the final norm (logits x forward_multipliers["logits"]) and the gated delta rule's scale folded into
       each layer's o_norm.eps. Calling apply again replaces them (never compounds).
    4. optimizer: an optimizer built on model.parameters() and not yet stepped; its groups are replaced by these
       (other settings kept). Or build one from the returned list: torch.optim.AdamW(apply(model, rec)).

    What survives saving: the weights do. The hook and the folded eps do not: save_pretrained / state_dict save
    neither (the hook is not in the module's state, eps is an attribute rebuilt from config.norm_eps on loading), and
    a GDNModel's mult is not in its state_dict. After loading, call apply(model, rec, init=False) again; likewise
    after anything that re-runs fla's init (post_init, init_weights)."""
    rec = recommendation if isinstance(recommendation, Recommendation) else recommendation_from_dict(recommendation)
    _check(model, rec)
    if init:
        _init(model, rec, generator)
    _install_multipliers(model, rec)
    groups = param_groups(model, rec)
    if optimizer is not None:
        _regroup(optimizer, model, groups)
    return groups


# --- 1. the check -----------------------------------------------------------------------------------------------

def model_shapes(model: nn.Module) -> dict:
    """The shapes of `model` in a recommendation's target_model terms."""
    if isinstance(model, GDNModel):
        return model.config.shapes()
    cfg = _fla_config(model)
    mlp = model.model.layers[0].mlp
    return {"width": cfg.hidden_size, "depth": cfg.num_hidden_layers, "num_heads": cfg.num_heads,
            "head_k_dim": cfg.head_dim, "head_v_dim": int(cfg.head_dim * cfg.expand_v),
            "mlp_hidden": mlp.gate_proj.out_features, "vocab_size": cfg.vocab_size,
            "tie_embeddings": bool(cfg.tie_word_embeddings), "conv_size": cfg.conv_size, "norm_eps": cfg.norm_eps}


def _fla_config(model: nn.Module):
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "hidden_size") or not hasattr(getattr(model, "model", None), "layers"):
        raise TypeError(f"apply takes deltamu's GDNModel or fla's GatedDeltaNetForCausalLM, got "
                        f"{type(model).__name__}")
    return cfg


def _check(model: nn.Module, rec: Recommendation) -> None:
    problems = []
    if not isinstance(model, GDNModel):
        problems += _fla_unsupported(model)
    shapes, target = model_shapes(model), rec.target_model
    for key in _COMPARED:
        if key in target and shapes[key] != target[key]:
            problems.append(f"{key}: the model has {shapes[key]!r}, the recommendation {target[key]!r}"
                            + _hint(key, target[key]))
    roleless = []
    for name, p in model.named_parameters():
        try:
            role_of(name, p)
        except (KeyError, ValueError):
            roleless.append(name)
    if roleless:
        problems.append(f"parameters without a role in deltamu's table: {', '.join(roleless)}")
    if problems:
        raise ValueError("the model is not the one the recommendation describes:\n  - " + "\n  - ".join(problems))


def _hint(key: str, want) -> str:
    return {"mlp_hidden": f" (fla rounds 8d/3 up to a multiple of 256, deltamu to 32: set intermediate_size={want})",
            "tie_embeddings": " (fla unties by default: set tie_word_embeddings, or ask for the recommendation with "
                              "an untied readout)",
            "head_k_dim": " (fla's head_dim)", "depth": " (fla's num_hidden_layers)",
            "width": " (fla's hidden_size)"}.get(key, "")


def _fla_unsupported(model: nn.Module) -> list[str]:
    """The fla options our model does not have (gdn.fla_config.fla_unsupported), and any layer that is not a
    GatedDeltaNet, by its tensors."""
    options = {k: v for k, v in _fla_config(model).to_dict().items() if k != "attn"}   # the layers say it by name
    problems = fla_unsupported(options)
    for i, block in enumerate(model.model.layers):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "A_log"):
            names = [f"model.layers.{i}.attn.{n}" for n, _ in (attn.named_parameters() if attn is not None else [])]
            problems.append(f"layer {i} is {type(attn).__name__}, not a GatedDeltaNet (hybrid softmax attention is "
                            f"not in deltamu's table): {', '.join(names) or 'no parameters'}")
    return problems


# --- 2. the init ------------------------------------------------------------------------------------------------

@torch.no_grad()
def _init(model: nn.Module, rec: Recommendation, generator: torch.Generator | None) -> None:
    by_role = {g.role: g for g in rec.groups}
    for name, p in model.named_parameters():
        g = by_role[role_of(name, p).value]
        if g.init == "conv_uniform" and g.init_bound is None:
            raise ValueError("the recommendation states no init_bound for the conv (an older answer): ask for it again")
        init_tensor(p, name, Init(g.init), g.init_std, rec.width_mult, generator, bound=g.init_bound)


# --- 3. the forward multipliers ---------------------------------------------------------------------------------

def _install_multipliers(model: nn.Module, rec: Recommendation) -> None:
    logits, scale = rec.forward_multipliers["logits"], rec.forward_multipliers.get("gdn_scale")
    if isinstance(model, GDNModel):
        model.mult = ForwardMultipliers(logits=logits, o=scale)
        for block in model.layers:
            block.attn.scale = block.attn.head_k_dim ** -0.5 if scale is None else scale
        return
    norm = model.model.norm
    old = getattr(norm, _HOOK, None)
    if old is not None:
        old.remove()
    setattr(norm, _HOOK, norm.register_forward_hook(lambda module, args, out: out * logits))
    for block in model.model.layers:
        attn = block.attn
        c = 1.0 if scale is None else scale * math.sqrt(attn.head_k_dim)    # fla's kernel scale is K^-1/2
        o_norm = attn.o_norm
        base = getattr(o_norm, _BASE_EPS, o_norm.eps)
        setattr(o_norm, _BASE_EPS, base)
        o_norm.eps = base / c ** 2          # rmsnorm(c * o, eps) == rmsnorm(o, eps / c^2)


# --- 4. the optimizer -------------------------------------------------------------------------------------------

def _regroup(optimizer: torch.optim.Optimizer, model: nn.Module, groups: list[dict]) -> None:
    if optimizer.state:
        raise ValueError("the optimizer has stepped already: build it from apply()'s groups before training")
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if held != {id(p) for p in model.parameters()}:
        raise ValueError("the optimizer must hold exactly the model's parameters")
    optimizer.param_groups.clear()
    for g in groups:
        optimizer.add_param_group(dict(g))
