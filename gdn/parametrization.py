"""THE parametrization table: every parameter's init, LR multiplier, weight decay and forward multiplier.

This is the only file where muP and SP differ. Every rule is a power of the width multiplier m = width / base_width
(written `width_mult` in code): a cell "-1" means "x m^-1". Model, init and optimizer code ask this table by role and
never look at a preset's name.

Roles are assigned by parameter name (fla's GatedDeltaNet names, so an fla model is covered too) and checked
against the tensor's rank; a parameter no pattern claims is an error, never a silent default.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Sequence

from gdn.config import GDNConfig

if TYPE_CHECKING:                       # the table itself needs no torch: gdn.spec and the service import it
    from torch import nn

# Bump when any rule below changes: a recommendation records the version it was computed under.
PARAMETRIZATION_VERSION = "2026.12.1"

BASE_STD = 0.02                 # sigma_0: std of the embedding and of every matrix at the base width
A_RANGE = (1e-4, 16.0)          # GDN: A ~ U(0, 16), A_log = log A (floored so log stays finite)
DT_RANGE = (1e-3, 1e-1)         # GDN: dt log-uniform in [1e-3, 1e-1], floored at 1e-4; dt_bias = softplus^-1(dt)
DT_FLOOR = 1e-4

OPTIMIZERS = ("adamw", "sgd")

# How the optimizer's weight decay meets a group's LR multiplier r. torch's AdamW decays by lr x wd per step (SGD's
# L2 term is scaled by lr too), so under "coupled" a group at r decays r x as fast as at the base width: muP's hidden
# matrices at m x width (r = 1/m) decay m x more slowly, which the held-out check found to fail where the corpus
# repeats (issue 18). "independent" divides the group's wd by r, holding the per-step decay base_lr x wd at every
# width (Wortsman et al. 2023; Kosson et al. 2025). "coupled" is what the transfer study measured and ships.
WEIGHT_DECAY_RULES = ("coupled", "independent")


class Role(str, Enum):
    EMBEDDING = "embedding"       # token embedding (also the readout when tied)
    READOUT = "readout"           # an untied lm_head
    HIDDEN = "hidden"             # q, k, v, g, o projections and the MLP matrices
    GATE_PROJ = "gate_proj"       # a_proj (alpha), b_proj (beta): d -> heads
    GATE_SCALAR = "gate_scalar"   # A_log, dt_bias: one per head
    CONV = "conv"                 # depthwise short-conv weights [C, 1, 4]
    NORM = "norm"                 # every RMSNorm gain


# Which names take which role: (role, glob patterns, tensor rank). Patterns start with "*" so they match our
# GDNModel ("layers.0.attn.q_proj.weight") and fla's GatedDeltaNetForCausalLM ("model.layers.0.attn.q_proj.weight").
ROLE_PATTERNS: tuple[tuple[Role, tuple[str, ...], int], ...] = (
    (Role.EMBEDDING, ("*embeddings.weight",), 2),
    (Role.READOUT, ("*lm_head.weight",), 2),
    (Role.HIDDEN, ("*.q_proj.weight", "*.k_proj.weight", "*.v_proj.weight", "*.g_proj.weight", "*.o_proj.weight",
                   "*.mlp.gate_proj.weight", "*.mlp.up_proj.weight", "*.mlp.down_proj.weight"), 2),
    (Role.GATE_PROJ, ("*.a_proj.weight", "*.b_proj.weight"), 2),
    (Role.GATE_SCALAR, ("*.A_log", "*.dt_bias"), 1),
    (Role.CONV, ("*.q_conv1d.weight", "*.k_conv1d.weight", "*.v_conv1d.weight"), 3),
    (Role.NORM, ("*norm.weight",), 1),
)


ROLE_PATTERN_OF: dict[Role, tuple[str, ...]] = {role: patterns for role, patterns, _ in ROLE_PATTERNS}

# The roles whose init std is sigma_0 (times init_mult): the weight matrices between width-sized spaces.
MATRIX_ROLES = frozenset({Role.HIDDEN, Role.GATE_PROJ})


def role_of(name: str, param=None) -> Role:
    """The role of a parameter, by name (and rank when the tensor is given). Unknown names raise KeyError."""
    for role, patterns, rank in ROLE_PATTERNS:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            if param is not None and param.dim() != rank:
                raise ValueError(f"parameter {name!r} looks like a {role.value} tensor but has shape "
                                 f"{tuple(param.shape)} (expected rank {rank})")
            return role
    raise KeyError(f"parameter {name!r} has no role in the parametrization table; add a pattern to "
                   f"gdn.parametrization.ROLE_PATTERNS before training with it")


# --- one rule per role ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Init:
    """How a tensor is initialised. kind: normal | zeros | ones | conv_uniform | gdn_gate.
    normal: std = BASE_STD * m^std_exp. conv_uniform: PyTorch's Conv1d default U(+-1/sqrt(fan_in)), times m^std_exp.
    gdn_gate: GDN's init of A_log or dt_bias (chosen by the parameter's name), width-independent."""
    kind: str
    std_exp: float = 0.0


@dataclass(frozen=True)
class Rule:
    init: Init
    lr_exp: dict[str, float]        # optimizer -> exponent of m in the LR multiplier
    weight_decay: bool
    grad_exp: dict[str, float] = dataclasses.field(default_factory=dict)
    # optimizer -> exponent of m in this role's gradient norm under the table (absent: 0). The global-norm clip
    # divides it out, so the clip acts at every width as it did at the base width (see Parametrization.clip_weight).


@dataclass(frozen=True)
class Readout:
    """How the output logits are produced. tied: the embedding matrix is the readout. logit_exp: logits x m^e."""
    name: str
    tied: bool
    logit_exp: float
    rule: Rule | None = None        # the lm_head's rule when untied


@dataclass(frozen=True)
class Parametrization:
    name: str
    rules: dict[Role, Rule]
    readout: Readout
    o_mult: bool                    # fla's o_t x sqrt(d / d0) before the head RMSNorm (paper section 4)
    output_mult: float = 1.0        # a constant logit multiplier tuned at the base width and carried as is
    init_mult: float = 1.0          # sigma_0 of the matrices (hidden, gate projections) x this: tuned at the base
                                    # width and carried as is, like output_mult
    weight_decay_rule: str = "coupled"   # WEIGHT_DECAY_RULES
    description: str = ""

    # ---- what the table yields, as functions of m ----
    def rule(self, role: Role) -> Rule:
        if role is Role.READOUT:
            if self.readout.rule is None:
                raise ValueError(f"readout {self.readout.name!r} is tied: the model must not have an lm_head")
            return self.readout.rule
        return self.rules[role]

    def lr_multiplier(self, role: Role, optimizer: str, width_mult: float) -> float:
        _check_optimizer(optimizer)
        return width_mult ** self.rule(role).lr_exp[optimizer]

    def init_std(self, role: Role, width_mult: float) -> float | None:
        """The std of a normal init, or None for the fixed inits (ones, GDN gate inits, conv default)."""
        init = self.rule(role).init
        if init.kind == "normal":
            return BASE_STD * self._std_mult(role) * width_mult ** init.std_exp
        if init.kind == "zeros":
            return 0.0
        return None

    def _std_mult(self, role: Role) -> float:
        return self.init_mult if role in MATRIX_ROLES else 1.0

    def clip_weight(self, role: Role, optimizer: str, width_mult: float) -> float:
        """The factor on this role's gradient in the norm the global clip compares with its threshold: m^-grad_exp.
        Under SGD the table makes a vector-like tensor's gradient norm shrink as m^-1/2 (Theta(1/m) entries, LR x m)
        while the hidden matrices' stays Theta(1), so a plain global norm at 8x width is the hidden matrices' alone
        and the clip no longer holds back the embedding, conv and gains as it did at the base width. Weighted, each
        role counts as much at every width; at m = 1 (and for SP and AdamW, whose exponents are 0) it is the plain
        global norm."""
        _check_optimizer(optimizer)
        return width_mult ** -self.rule(role).grad_exp.get(optimizer, 0.0)

    def clip_weights(self, model: nn.Module, optimizer: str, width_mult: float) -> list[float]:
        """clip_weight of every parameter of `model`, in model.parameters() order."""
        return [self.clip_weight(role_of(name, p), optimizer, width_mult) for name, p in model.named_parameters()]

    def logit_multiplier(self, width_mult: float) -> float:
        return self.output_mult * width_mult ** self.readout.logit_exp

    def o_multiplier(self, head_k_dim: int, base_head_k_dim: int) -> float:
        """The factor on o_t = S_t^T q_hat (unit-norm q): the gated delta rule kernel's `scale` argument.
        fla's default is head_k_dim^-1/2, under which o_t shrinks as d^-1/2 on the head_dim axis; the paper's fix
        multiplies that o_t by sqrt(d / d0), i.e. holds the scale at the base width's. Only the RMSNorm's eps sees
        this factor, but it sees it: at the base width the two differ by ~2 % of loss (docs/transfer.md)."""
        return (base_head_k_dim if self.o_mult else head_k_dim) ** -0.5

    def weight_decay_mult(self, role: Role, optimizer: str, width_mult: float) -> float:
        """The factor on the optimizer's weight decay in this role's group: 0 where the role does not decay, else
        1 ("coupled") or 1 / the role's LR multiplier ("independent")."""
        if not self.rule(role).weight_decay:
            return 0.0
        if self.weight_decay_rule == "independent":
            return 1.0 / self.lr_multiplier(role, optimizer, width_mult)
        return 1.0

    def to_dict(self) -> dict:
        return {"name": self.name, "readout": self.readout.name, "output_mult": self.output_mult,
                "init_mult": self.init_mult, "weight_decay_rule": self.weight_decay_rule}

    def groups(self, width_mult: float, optimizer: str) -> list[Group]:
        """Every role a model under this parametrization has (the lm_head only when untied), as numbers at
        width_mult: THE place the table becomes per-group hyperparameters, for the trainers, the recommendation
        and gdn.optim.param_groups alike."""
        _check_optimizer(optimizer)
        roles = [r for r in Role if r is not Role.READOUT] + ([] if self.readout.tied else [Role.READOUT])
        return [Group(role=role.value, patterns=ROLE_PATTERN_OF[role], lr_multiplier=self.lr_multiplier(role, optimizer, width_mult),
                      init=self.rule(role).init.kind, init_std=self.init_std(role, width_mult),
                      weight_decay=self.rule(role).weight_decay,
                      clip_weight=self.clip_weight(role, optimizer, width_mult),
                      weight_decay_mult=self.weight_decay_mult(role, optimizer, width_mult))
                for role in roles]

    def forward_multipliers(self, target: GDNConfig, base: GDNConfig) -> ForwardMultipliers:
        """The forward pass's constants of the model `target` tuned at `base` (the same model at the base width)."""
        _, K, _ = target.heads_and_dims()
        _, K_base, _ = base.heads_and_dims()
        return ForwardMultipliers(logits=self.logit_multiplier(target.width / base.width),
                                  o=self.o_multiplier(K, K_base))


@dataclass(frozen=True)
class Group:
    """One role's hyperparameters at a width, from the table (Parametrization.groups)."""
    role: str
    patterns: tuple[str, ...]        # parameter-name globs: ours and fla's
    lr_multiplier: float             # x the base lr
    init: str                        # the init kind (Init.kind)
    init_std: float | None           # std of a normal (0 for zeros), None for the fixed inits
    weight_decay: bool               # does the optimizer's weight decay apply to this role
    clip_weight: float               # the role's gradient weight in the norm the global clip compares
    weight_decay_mult: float = 1.0   # its weight decay = the optimizer's x this (Parametrization.weight_decay_mult)


@dataclass(frozen=True)
class ForwardMultipliers:
    """The table's constants in the forward pass (GDNModel)."""
    logits: float = 1.0         # logits = (h @ E^T) * logits
    o: float | None = None      # o_t = o * S_t^T q_hat before the per-head RMSNorm (q_hat unit-norm); None: fla's
                                # default K^-1/2. It is the kernel's `scale`: o is linear in q, so it costs nothing.


def param_groups(model: nn.Module, groups: Sequence[Group], lr: float, weight_decay: float) -> list[dict]:
    """torch optimizer groups for a GDN model (ours or fla's): every parameter goes to the group of its role
    (gdn.parametrization.role_of); each group carries its `lr_mult` (so a schedule can scale it), its `lr` (base lr x
    lr_mult), its weight decay (the optimizer's x weight_decay_mult where the role decays, else 0) and its `clip_weight`. A parameter
    whose role has no group is an error."""
    by_role = {g.role: g for g in groups}
    members: dict[str, list] = {}
    for name, p in model.named_parameters():
        role = role_of(name, p).value
        if role not in by_role:
            raise KeyError(f"parameter {name!r} ({role}) matches no group of the recommendation")
        members.setdefault(role, []).append(p)
    return [{"params": members[g.role], "name": g.role, "role": g.role, "lr_mult": g.lr_multiplier,
             "lr": lr * g.lr_multiplier, "weight_decay": weight_decay * g.weight_decay_mult if g.weight_decay else 0.0,
             "clip_weight": g.clip_weight}
            for g in groups if g.role in members]


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


# --- the table --------------------------------------------------------------------------------------------------
#                    init                          AdamW LR       SGD LR        weight decay   SGD grad norm
def _rule(init: Init, adamw: float, sgd: float, wd: bool, sgd_grad: float = 0.0) -> Rule:
    return Rule(init, {"adamw": adamw, "sgd": sgd}, wd, {"sgd": sgd_grad} if sgd_grad else {})


NORMAL_CONST = Init("normal", 0.0)
NORMAL_HIDDEN = Init("normal", -0.5)        # sigma_0 / sqrt(m): variance 1/fan_in
GDN_GATE = Init("gdn_gate")
CONV_DEFAULT, ONES, ZEROS = Init("conv_uniform"), Init("ones"), Init("zeros")

# The last column: under the table's backward (logits x 1/m), a tensor with one width-sized axis and Theta(1/m)
# gradient entries (embedding, conv, gains) or a per-head scalar at LR x sqrt(m) has a gradient norm ~ m^-1/2;
# the matrices' stays Theta(1). The clip divides it out (Parametrization.clip_weight).
MUP_RULES: dict[Role, Rule] = {
    Role.EMBEDDING:   _rule(NORMAL_CONST, 0, 1, False, -0.5),
    Role.HIDDEN:      _rule(NORMAL_HIDDEN, -1, 0, True),
    Role.GATE_PROJ:   _rule(NORMAL_HIDDEN, -1, -0.5, True),      # paper: SGD LR Theta(1/sqrt(d))
    Role.GATE_SCALAR: _rule(GDN_GATE, 0, 0.5, False, -0.5),      # paper: SGD LR Theta(sqrt(d))
    Role.CONV:        _rule(CONV_DEFAULT, 0, 1, False, -0.5),    # vector-like (fan_in 4 fixed), TP5
    Role.NORM:        _rule(ONES, 0, 1, False, -0.5),            # vector-like, TP5
}
SP_RULES: dict[Role, Rule] = {role: dataclasses.replace(rule, init=Init(rule.init.kind, 0.0),
                                                        lr_exp={"adamw": 0, "sgd": 0}, grad_exp={})
                              for role, rule in MUP_RULES.items()}
MUP_ORIGINAL_RULES: dict[Role, Rule] = {
    **MUP_RULES,
    Role.GATE_PROJ:   _rule(NORMAL_HIDDEN, -1, 0, True),         # plain hidden
    Role.GATE_SCALAR: _rule(GDN_GATE, 0, 0, False, -0.5),        # a width-independent scalar: constant LR
}
MUP_PAPER_CODE_RULES: dict[Role, Rule] = {
    **MUP_RULES,
    Role.CONV:        _rule(Init("conv_uniform", -0.5), -1, 0, True, -0.5),  # the authors' code: conv in the hidden
    Role.NORM:        _rule(ONES, -1, 0, False, -0.5),                       # group; gains in its no-decay group
}

# The preset for SGD (docs/transfer.md, "SGD"): under SGD the best sigma_0 doubled over 8x width on the GPU and the
# CPU, so the matrices' init shrinks as m^-1/6 here instead of m^-1/2. On the GPU at 1000 steps it transfers over 8x
# (argmin within one grid step, within the seed noise of SP tuned by hand); at 250 steps it does not yet.
MUP_SGD_RULES: dict[Role, Rule] = {
    **MUP_RULES,
    Role.HIDDEN:      dataclasses.replace(MUP_RULES[Role.HIDDEN], init=Init("normal", -1 / 6)),
    Role.GATE_PROJ:   dataclasses.replace(MUP_RULES[Role.GATE_PROJ], init=Init("normal", -1 / 6)),
}

# Readout rules. muP's tied readout follows TP5 Table 8 for output weights (init const, multiplier 1/m); the
# untied "zero" readout follows TP5 Table 3 (no multiplier, LR 1/m under both optimizers, zero init).
READOUTS: dict[str, Readout] = {
    "tied-scaled": Readout("tied-scaled", tied=True, logit_exp=-1),
    "tied": Readout("tied", tied=True, logit_exp=0),
    "untied-zero": Readout("untied-zero", tied=False, logit_exp=0, rule=_rule(ZEROS, -1, -1, False, 0.5)),
    "untied-scaled": Readout("untied-scaled", tied=False, logit_exp=-1,
                             rule=_rule(NORMAL_CONST, 0, 1, False, -0.5)),
}
SP_READOUTS: dict[str, Readout] = {
    "tied": READOUTS["tied"],
    "untied": Readout("untied", tied=False, logit_exp=0, rule=_rule(NORMAL_CONST, 0, 0, False)),
}

# The base-width multipliers (output_mult, init_mult) a preset uses unless a job sets them, per optimizer: the
# values the transfer study tuned at the base width (docs/transfer.md). SGD takes AdamW's: on the GPU at the base
# width they beat (1, 1) by 6 % of loss and (4, 4) by 8 %, and at 8x they are within the seed noise of the best.
BASE_MULTS: dict[str, dict[str, tuple[float, float]]] = {"mup": {"adamw": (4.0, 2.0), "sgd": (4.0, 2.0)},
                                                         "mup-sgd": {"sgd": (4.0, 2.0)}}

PRESETS: dict[str, dict] = {
    "mup": dict(rules=MUP_RULES, readouts=READOUTS, default_readout="tied-scaled", o_mult=True,
                description="muP for GDN (paper + TP5 for the vector-like conv and norm gains), tied readout with "
                            "logits x output_mult / m"),
    "sp": dict(rules=SP_RULES, readouts=SP_READOUTS, default_readout="tied", o_mult=False,
               description="standard parametrization: base-width inits and one LR at every width"),
    "mup-original": dict(rules=MUP_ORIGINAL_RULES, readouts=READOUTS, default_readout="tied-scaled", o_mult=True,
                         description="plain muP: gate projections as hidden weights, gate scalars at constant LR"),
    "mup-sgd": dict(rules=MUP_SGD_RULES, readouts=READOUTS, default_readout="tied-scaled", o_mult=True,
                    description="mup with the matrices' init std ~ m^-1/6 instead of m^-1/2: the preset for SGD "
                                "(transfers over 8x at 1000 steps on the GPU, not at 250; docs/transfer.md)"),
    "mup-paper-code": dict(rules=MUP_PAPER_CODE_RULES, readouts=READOUTS, default_readout="tied-scaled",
                           o_mult=False,
                           description="what the authors' released code does: conv and norm gains in the hidden "
                                       "group, no o_t multiplier"),
}


def get_parametrization(name: str = "mup", readout: str | None = None, output_mult: float | None = None,
                        init_mult: float | None = None, optimizer: str = "adamw",
                        weight_decay_rule: str = "coupled") -> Parametrization:
    """A preset, optionally with another readout rule and the base width's output and init multipliers (None: the
    preset's tuned values for this optimizer, BASE_MULTS, else 1)."""
    if name not in PRESETS:
        raise ValueError(f"unknown parametrization {name!r}; choose one of {sorted(PRESETS)}")
    _check_optimizer(optimizer)
    preset = PRESETS[name]
    default_output, default_init = BASE_MULTS.get(name, {}).get(optimizer, (1.0, 1.0))
    output_mult = default_output if output_mult is None else output_mult
    init_mult = default_init if init_mult is None else init_mult
    readout = readout or preset["default_readout"]
    if readout not in preset["readouts"]:
        raise ValueError(f"parametrization {name!r} has no readout {readout!r}; choose one of "
                         f"{sorted(preset['readouts'])}")
    for label, value in (("output_mult", output_mult), ("init_mult", init_mult)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{label} must be a positive number, got {value}")
    if weight_decay_rule not in WEIGHT_DECAY_RULES:
        raise ValueError(f"weight_decay_rule must be one of {WEIGHT_DECAY_RULES}, got {weight_decay_rule!r}")
    rules = dict(preset["rules"])
    return Parametrization(name=name, rules=rules, readout=preset["readouts"][readout], o_mult=preset["o_mult"],
                           output_mult=output_mult, init_mult=init_mult, weight_decay_rule=weight_decay_rule,
                           description=preset["description"])
