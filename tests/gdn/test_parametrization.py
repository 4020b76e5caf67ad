"""The table: every parameter has a role, base-width inits agree, and the multipliers follow the closed form."""
import math

import pytest
import torch
from torch import nn

from gdn.config import GDNConfig
from gdn.init import init_model
from gdn.model import GDNModel
from gdn.parametrization import PRESETS, Role, get_parametrization, param_groups, role_of
from gdn.spec import SweepConfig
from gdn.trial import build_model

MUP_PRESETS = [name for name in PRESETS if name != "sp"]


def all_variants():
    for name, preset in PRESETS.items():
        for readout in preset["readouts"]:
            yield name, readout


@pytest.mark.parametrize("axis,width", [("head_dim", 64), ("heads", 256)])
@pytest.mark.parametrize("name,readout", list(all_variants()), ids=lambda x: str(x))
def test_every_parameter_has_a_role(name, readout, axis, width):
    config = SweepConfig(model=GDNConfig(width=width, depth=2, width_axis=axis), parametrization=name,
                         readout=readout)
    model, p, _ = build_model(config, width, seed=0)
    roles = {role_of(n, t) for n, t in model.named_parameters()}
    expected = {Role.EMBEDDING, Role.HIDDEN, Role.GATE_PROJ, Role.GATE_SCALAR, Role.CONV, Role.NORM}
    assert roles == expected | ({Role.READOUT} if not p.readout.tied else set())
    groups = param_groups(model, p.groups(1.0, "adamw"), lr=1e-3, weight_decay=0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_fla_names_get_roles():
    """fla's GatedDeltaNetForCausalLM nests the backbone under `model.`; the same patterns must claim it."""
    class FlaLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = GDNModel(GDNConfig(width=64, depth=1, tie_embeddings=False))
            self.lm_head = nn.Linear(64, 256, bias=False)
    for name, t in FlaLike().named_parameters():
        role_of(name, t)  # raises if unclaimed
    assert role_of("model.layers.3.attn.b_proj.weight") is Role.GATE_PROJ
    assert role_of("model.layers.3.attn.dt_bias") is Role.GATE_SCALAR
    assert role_of("model.layers.3.attn.o_norm.weight") is Role.NORM


def test_unassigned_parameter_is_an_error():
    with pytest.raises(KeyError, match="no role"):
        role_of("layers.0.attn.mystery_proj.weight")
    with pytest.raises(ValueError, match="rank"):
        role_of("layers.0.attn.q_proj.weight", torch.zeros(3))
    model = GDNModel(GDNConfig(width=64, depth=1))
    model.layers[0].attn.extra = nn.Parameter(torch.zeros(4))
    with pytest.raises(KeyError, match="extra"):
        init_model(model, get_parametrization("mup"), 1.0)


@pytest.mark.parametrize("name", MUP_PRESETS)
def test_mup_presets_at_base_width_initialise_like_the_base_model(name):
    """At m = 1 every preset draws the same init: the base model (here: sp, which ignores width)."""
    config = SweepConfig(model=GDNConfig(width=64, depth=2))
    base, _, _ = build_model(SweepConfig(model=config.model, parametrization="sp"), 64, seed=3)
    model, _, _ = build_model(SweepConfig(model=config.model, parametrization=name, output_mult=1.0,
                                          init_mult=1.0), 64, seed=3)
    for (n, a), (_, b) in zip(base.named_parameters(), model.named_parameters()):
        assert torch.equal(a, b), n


def test_multipliers_at_m4_follow_the_closed_form():
    mup = get_parametrization("mup", output_mult=1.0, init_mult=1.0)   # the table alone, no base-width constants
    assert mup.lr_multiplier(Role.HIDDEN, "adamw", 4) == pytest.approx(1 / 4)
    assert mup.lr_multiplier(Role.GATE_PROJ, "adamw", 4) == pytest.approx(1 / 4)
    assert mup.lr_multiplier(Role.GATE_PROJ, "sgd", 4) == pytest.approx(1 / 2)
    assert mup.lr_multiplier(Role.GATE_SCALAR, "sgd", 4) == pytest.approx(2)
    assert mup.lr_multiplier(Role.GATE_SCALAR, "adamw", 4) == pytest.approx(1)
    assert mup.lr_multiplier(Role.EMBEDDING, "sgd", 4) == pytest.approx(4)
    assert mup.lr_multiplier(Role.HIDDEN, "sgd", 4) == pytest.approx(1)
    assert mup.init_std(Role.HIDDEN, 4) == pytest.approx(0.01)
    assert mup.init_std(Role.EMBEDDING, 4) == pytest.approx(0.02)
    original = get_parametrization("mup-original")
    assert original.lr_multiplier(Role.GATE_PROJ, "sgd", 4) == pytest.approx(1)
    assert original.lr_multiplier(Role.GATE_SCALAR, "sgd", 4) == pytest.approx(1)
    code = get_parametrization("mup-paper-code")
    assert code.lr_multiplier(Role.CONV, "adamw", 4) == pytest.approx(1 / 4)
    assert code.lr_multiplier(Role.NORM, "adamw", 4) == pytest.approx(1 / 4)
    assert code.o_multiplier(128, 32) == pytest.approx(128 ** -0.5)   # fla's default, shrinking with width
    assert mup.o_multiplier(128, 32) == pytest.approx(32 ** -0.5)     # held at the base width's
    assert mup.o_multiplier(32, 32) == code.o_multiplier(32, 32)
    assert get_parametrization("mup", "tied-scaled", output_mult=1).logit_multiplier(4) == pytest.approx(1 / 4)
    assert get_parametrization("mup", "tied-scaled").logit_multiplier(4) == pytest.approx(4 / 4)   # alpha = 4
    assert get_parametrization("mup", "tied", output_mult=1).logit_multiplier(4) == pytest.approx(1)
    assert get_parametrization("mup", "tied", output_mult=3.0).logit_multiplier(4) == pytest.approx(3)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_sp_ignores_width(optimizer):
    sp = get_parametrization("sp")
    for role in Role:
        if role is Role.READOUT:
            continue
        assert sp.lr_multiplier(role, optimizer, 8) == 1
        assert sp.init_std(role, 8) == sp.init_std(role, 1)
    assert sp.logit_multiplier(8) == 1


def test_measured_init_std_scales_with_width():
    """The drawn tensors, not just the table, follow 0.02 / sqrt(m) under mup and 0.02 under sp."""
    base = GDNConfig(width=64, depth=1)
    for name, expect in (("mup", 0.02 / math.sqrt(4)), ("sp", 0.02)):
        model, _, _ = build_model(SweepConfig(model=base, parametrization=name, init_mult=1.0), 256, seed=0)
        w = model.layers[0].mlp.up_proj.weight
        assert w.std().item() == pytest.approx(expect, rel=0.05)
        assert model.embeddings.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_param_groups_scale_lr_and_decay():
    config = SweepConfig(model=GDNConfig(width=64, depth=1))
    model, p, _ = build_model(config, 256, seed=0)
    groups = {g["role"]: g for g in param_groups(model, p.groups(4.0, "adamw"), lr=1e-2, weight_decay=0.1)}
    assert groups["hidden"]["lr"] == pytest.approx(1e-2 / 4)
    assert groups["hidden"]["weight_decay"] == 0.1
    assert groups["embedding"]["weight_decay"] == 0.0
    assert groups["gate_scalar"]["lr"] == pytest.approx(1e-2)


def test_independent_weight_decay_holds_the_per_step_decay_at_every_width():
    """coupled (the default): every decayed group has the optimizer's wd, so its per-step decay lr x wd follows the
    LR multiplier (1/m for muP's matrices). independent: wd / multiplier, so lr x wd is base_lr x wd at any width;
    the torch optimizer, the recommendation and the groups rebuilt from it agree."""
    from gdn.optim import build_optimizer
    from gdn.fit import Optimum
    from gdn.recommend import SweepResult, param_groups as rec_param_groups, recommend
    from gdn.spec import OptimizerSpec
    lr, wd, m = 1e-2, 0.1, 4.0
    for rule in ("coupled", "independent"):
        config = SweepConfig(model=GDNConfig(width=64, depth=1), optimizer=OptimizerSpec(weight_decay_rule=rule))
        model, p, _ = build_model(config, 256, seed=0)
        groups = {g["name"]: g for g in build_optimizer(model, p, config.optimizer, lr, m).param_groups}
        for role in ("hidden", "gate_proj"):
            g = groups[role]
            assert g["lr"] == pytest.approx(lr / m)
            assert g["weight_decay"] == pytest.approx(wd if rule == "coupled" else wd * m)
            assert g["lr"] * g["weight_decay"] == pytest.approx(lr * wd / (m if rule == "coupled" else 1))
        assert groups["embedding"]["weight_decay"] == 0.0 and groups["norm"]["weight_decay"] == 0.0
        rec = recommend(SweepResult(config, Optimum(lr=lr, log2_lr=math.log2(lr), loss=1.0, log2_lr_std=None,
                                                    on_edge=False)), 256)
        by_role = {g.role: g for g in rec.groups}
        assert by_role["hidden"].weight_decay == pytest.approx(groups["hidden"]["weight_decay"])
        rebuilt = {g["role"]: g for g in rec_param_groups(model, rec.to_dict())}
        assert rebuilt["hidden"]["weight_decay"] == pytest.approx(groups["hidden"]["weight_decay"])
        assert rec.parametrization["weight_decay_rule"] == rule
    sp = get_parametrization("sp", weight_decay_rule="independent")
    assert all(g.weight_decay_mult in (0.0, 1.0) for g in sp.groups(m, "adamw"))     # SP: multipliers are 1
    with pytest.raises(ValueError, match="weight_decay_rule"):
        OptimizerSpec(weight_decay_rule="half")


def test_unknown_preset_and_readout_are_clear_errors():
    with pytest.raises(ValueError, match="unknown parametrization"):
        get_parametrization("mup-v9")
    with pytest.raises(ValueError, match="no readout"):
        get_parametrization("sp", "tied-scaled")


def test_init_mult_scales_the_matrices_only():
    """sigma_0 tuned at the base width (init_mult) multiplies the hidden and gate-projection stds, nothing else."""
    p = get_parametrization("mup", init_mult=3.0)
    assert p.init_std(Role.HIDDEN, 4) == pytest.approx(3 * 0.01)
    assert p.init_std(Role.GATE_PROJ, 4) == pytest.approx(3 * 0.01)
    assert p.init_std(Role.EMBEDDING, 4) == pytest.approx(0.02)
    base = GDNConfig(width=64, depth=1)
    model, _, _ = build_model(SweepConfig(model=base, init_mult=3.0), 256, seed=0)
    assert model.layers[0].mlp.up_proj.weight.std().item() == pytest.approx(0.03, rel=0.05)
    assert model.embeddings.weight.std().item() == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="init_mult"):
        get_parametrization("mup", init_mult=0.0)


def test_base_width_multipliers_default_per_preset_and_optimizer():
    """mup carries the study's tuned base multipliers (alpha 4, sigma_0 x 2) under both optimizers; sp keeps 1, 1."""
    assert (get_parametrization("mup").output_mult, get_parametrization("mup").init_mult) == (4.0, 2.0)
    sgd = get_parametrization("mup", optimizer="sgd")
    assert (sgd.output_mult, sgd.init_mult) == (4.0, 2.0)
    assert get_parametrization("mup-original", optimizer="sgd").output_mult == 1.0
    sp = get_parametrization("sp")
    assert (sp.output_mult, sp.init_mult) == (1.0, 1.0)
    mine = get_parametrization("mup", output_mult=2.0, init_mult=1.0)
    assert (mine.output_mult, mine.init_mult) == (2.0, 1.0)
    assert mine.logit_multiplier(4) == pytest.approx(0.5)
    # at m = 1 the default mup model differs from the table's base model only by those two constants
    base = GDNConfig(width=64, depth=1)
    tuned, _, _ = build_model(SweepConfig(model=base), 64, seed=0)
    plain, _, _ = build_model(SweepConfig(model=base, output_mult=1.0, init_mult=1.0), 64, seed=0)
    assert torch.allclose(tuned.layers[0].mlp.up_proj.weight, 2 * plain.layers[0].mlp.up_proj.weight)
    assert torch.equal(tuned.embeddings.weight, plain.embeddings.weight)
    assert tuned.mult.logits == 4 * plain.mult.logits


def test_sgd_clip_weights_make_each_roles_gradient_count_as_at_the_base_width():
    """Under SGD the vector-like roles' gradient norms shrink as m^-1/2: the clip weighs them back by m^1/2. At the
    base width, for SP and under AdamW every weight is 1, so the clip is torch's global-norm clip there."""
    p = get_parametrization("mup", optimizer="sgd")
    assert p.clip_weight(Role.EMBEDDING, "sgd", 8) == pytest.approx(8 ** 0.5)
    assert p.clip_weight(Role.NORM, "sgd", 4) == pytest.approx(2.0)
    assert p.clip_weight(Role.HIDDEN, "sgd", 8) == 1.0
    assert all(p.clip_weight(r, "sgd", 1) == 1.0 for r in Role if r is not Role.READOUT)
    assert all(p.clip_weight(r, "adamw", 8) == 1.0 for r in Role if r is not Role.READOUT)
    assert all(get_parametrization("sp").clip_weight(r, "sgd", 8) == 1.0 for r in Role if r is not Role.READOUT)


def test_weighted_clip_norm_and_scale():
    """clip_grad_norm with weights: the norm is that of the weighted gradients, one factor scales them all."""
    from gdn.optim import clip_grad_norm

    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    grads = [torch.randn_like(p) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    total = clip_grad_norm(model, 0.5, [1.0, 3.0])
    expected = (grads[0].norm() ** 2 + (3 * grads[1].norm()) ** 2).sqrt()
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    coef = min(1.0, 0.5 / (float(expected) + 1e-6))
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g * coef)
    for p, g in zip(model.parameters(), grads):          # weights of 1: torch's own clip, same numbers
        p.grad = g.clone()
    unweighted = float(torch.stack([g.norm() for g in grads]).norm())
    assert float(clip_grad_norm(model, 0.0, [1.0, 1.0])) == pytest.approx(unweighted)


def test_mup_sgd_differs_from_mup_only_in_the_matrices_init_exponent():
    """The SGD study's lead: matrices' init std ~ m^-1/6 (mup: m^-1/2); every LR, the clip and m = 1 as mup's."""
    lead, mup = get_parametrization("mup-sgd", optimizer="sgd"), get_parametrization("mup", optimizer="sgd")
    for role in (Role.HIDDEN, Role.GATE_PROJ):
        assert lead.init_std(role, 8) == pytest.approx(0.02 * 2 * 8 ** (-1 / 6))
        assert lead.init_std(role, 1) == mup.init_std(role, 1)
    for role in Role:
        if role is not Role.READOUT:
            assert lead.lr_multiplier(role, "sgd", 8) == mup.lr_multiplier(role, "sgd", 8)
            assert lead.clip_weight(role, "sgd", 8) == mup.clip_weight(role, "sgd", 8)
    assert lead.init_std(Role.EMBEDDING, 8) == mup.init_std(Role.EMBEDDING, 8)
