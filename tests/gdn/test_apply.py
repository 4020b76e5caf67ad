"""deltamu.apply: a recommendation made real on our GDNModel and on fla's GatedDeltaNetForCausalLM (on the CPU, with
torch stand-ins for fla's Triton ops)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import deltamu
from gdn.apply import apply, model_shapes
from gdn.config import GDNConfig
from gdn.fit import Optimum
from gdn.model import GDNModel
from gdn.parametrization import role_of
from gdn.recommend import SweepResult, recommend
from gdn.spec import OptimizerSpec, SweepConfig

BASE, TARGET = 32, 64


def _rec(readout=None, optimizer="adamw", vocab=64):
    config = SweepConfig(model=GDNConfig(width=BASE, depth=2, vocab_size=vocab), readout=readout,
                         optimizer=OptimizerSpec(name=optimizer))
    return recommend(SweepResult(config, Optimum(lr=3e-3, log2_lr=math.log2(3e-3), loss=2.0, log2_lr_std=0.1,
                                                 on_edge=False)), TARGET), config.model_at(TARGET)


# --- the recommendation states every init ----------------------------------------------------------------------

def test_recommendation_states_every_init():
    rec, target = _rec()
    groups = {g.role: g for g in rec.groups}
    assert groups["conv"].init_bound == pytest.approx(1 / math.sqrt(target.conv_size))
    assert "U(-0.5, 0.5)" in groups["conv"].init_note
    assert "U(0, 16)" in groups["gate_scalar"].init_note and "[0.001, 0.1]" in groups["gate_scalar"].init_note
    assert "inverse softplus" in groups["gate_scalar"].init_note
    assert groups["norm"].init_note == "ones"
    assert groups["hidden"].init_note == f"N(0, {groups['hidden'].init_std:.6g}^2)"
    assert all(g.init_note for g in rec.groups)
    assert all((g.init_bound is None) == (g.init != "conv_uniform") for g in rec.groups)
    d = rec.to_dict()
    assert d["target_model"]["conv_size"] == 4 and "init_bound" in d["groups"][0]
    assert deltamu.recommendation_from_dict(d) == rec


# --- GDNModel ---------------------------------------------------------------------------------------------------

def _pooled(model, role):
    return torch.cat([p.detach().flatten().double() for n, p in model.named_parameters()
                      if role_of(n, p).value == role])


def _check_init(model, rec):
    for g in rec.groups:
        x = _pooled(model, g.role)
        if g.init == "normal":
            assert x.std().item() == pytest.approx(g.init_std, rel=0.06), g.role
            assert abs(x.mean().item()) < 4 * g.init_std / math.sqrt(x.numel()), g.role
        elif g.init == "zeros":
            assert (x == 0).all()
        elif g.init == "ones":
            assert (x == 1).all()
        elif g.init == "conv_uniform":
            assert x.abs().max().item() <= g.init_bound
            assert x.std().item() == pytest.approx(g.init_bound / math.sqrt(3), rel=0.06)
    for n, p in model.named_parameters():
        if n.endswith("A_log"):
            assert (p.exp() <= 16).all() and (p.exp() > 0).all()
        elif n.endswith("dt_bias"):
            dt = F.softplus(p.double())
            assert ((dt >= 1e-3 * (1 - 1e-6)) & (dt <= 0.1 * (1 + 1e-6))).all()


@pytest.mark.parametrize("readout", [None, "untied-zero"])
def test_apply_to_gdn_model(readout):
    rec, target = _rec(readout)
    model = GDNModel(target, backend="chunk")
    groups = apply(model, rec, generator=torch.Generator().manual_seed(0))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {g["name"]: g["lr"] for g in groups} == {g.role: g.lr for g in rec.groups}
    _check_init(model, rec)
    assert model.mult.logits == rec.forward_multipliers["logits"]
    assert all(b.attn.scale == rec.forward_multipliers["gdn_scale"] for b in model.layers)


def test_apply_to_gdn_model_is_seeded_and_regroups_an_optimizer():
    rec, target = _rec()
    a, b = GDNModel(target, backend="chunk"), GDNModel(target, backend="chunk")
    apply(a, rec, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(b.parameters(), lr=1.0)
    groups = apply(b, rec.to_dict(), opt, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]
    assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)      # the optimizer's other settings kept


def test_an_older_answer_without_the_conv_bound_is_refused():
    rec, target = _rec()
    d = rec.to_dict()
    for g in d["groups"]:
        del g["init_bound"], g["init_note"]
    with pytest.raises(ValueError, match="init_bound"):
        apply(GDNModel(target, backend="chunk"), d)
    apply(GDNModel(target, backend="chunk"), d, init=False)      # the multipliers need no init fields


def test_gdn_model_mismatch_lists_every_difference():
    rec, target = _rec()
    wrong = GDNModel(GDNConfig(width=TARGET, depth=3, vocab_size=64, tie_embeddings=False), backend="chunk")
    with pytest.raises(ValueError) as e:
        apply(wrong, rec)
    assert "depth" in str(e.value) and "tie_embeddings" in str(e.value)


# --- fla --------------------------------------------------------------------------------------------------------

def _fla_model(target: GDNConfig, **overrides):
    fla_models = pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")
    H, K, V = target.heads_and_dims()
    kw = dict(hidden_size=target.width, num_hidden_layers=target.depth, num_heads=H, head_dim=K,
              expand_v=V / K, intermediate_size=target.mlp_hidden, vocab_size=target.vocab_size,
              tie_word_embeddings=target.tie_embeddings, conv_size=target.conv_size, norm_eps=target.norm_eps,
              fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)
    kw.update(overrides)
    return fla_models.GatedDeltaNetForCausalLM(fla_models.GatedDeltaNetConfig(**kw))


@pytest.fixture
def torch_fla():
    """fla's GatedDeltaNet with its Triton ops replaced by deltamu's torch references (fla's ops need a GPU): the
    stand-ins benchmarks/fla_parity.py runs fla on without a GPU."""
    pytest.importorskip("fla.layers.gated_deltanet", reason="fla (flash-linear-attention) is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from fla_parity import fla_on_torch
    with fla_on_torch():
        yield


@pytest.mark.parametrize("readout", [None, "untied-scaled"])
def test_fla_model_gets_the_recommendation_and_the_same_logits_as_ours(readout, torch_fla):
    rec, target = _rec(readout)
    fla_model = _fla_model(target)
    groups = apply(fla_model, rec, generator=torch.Generator().manual_seed(0))
    names = {id(p): n for n, p in fla_model.named_parameters()}
    assert sorted(names[id(p)] for g in groups for p in g["params"]) == sorted(names.values())   # every one
    _check_init(fla_model, rec)
    assert model_shapes(fla_model) == {k: v for k, v in target.shapes().items() if k not in ("key_dim", "value_dim",
                                                                                           "width_axis")}
    ours = GDNModel(target, backend="chunk")
    apply(ours, rec, init=False)
    state = {k.removeprefix("model."): v for k, v in fla_model.state_dict().items()}
    ours.load_state_dict({k: state[k] for k in ours.state_dict()})
    ours.double().eval(), fla_model.double().eval()
    idx = torch.randint(0, target.vocab_size, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = ours(idx), fla_model(idx, use_cache=False).logits
    fm, K = rec.forward_multipliers, target.heads_and_dims()[1]
    assert fm["logits"] != 1 and fm["gdn_scale"] != K ** -0.5       # both multipliers are exercised
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # applied twice, nothing compounds: the hook is replaced, the eps folded from fla's own
    apply(fla_model, rec, init=False)
    with torch.no_grad():
        torch.testing.assert_close(fla_model(idx, use_cache=False).logits, want, rtol=1e-5, atol=1e-5)


def test_fla_untied_against_a_tied_recommendation():
    rec, target = _rec()
    with pytest.raises(ValueError, match="tie_embeddings: the model has False.*tie_word_embeddings"):
        apply(_fla_model(target, tie_word_embeddings=False), rec)


def test_fla_mlp_size_mismatch():
    rec, target = _rec()
    with pytest.raises(ValueError, match="mlp_hidden: the model has 256, the recommendation 192.*"
                                         "intermediate_size=192"):
        apply(_fla_model(target, intermediate_size=None), rec)          # fla's own rounding: to 256


def test_fla_hybrid_attention_layer_names_its_tensors(monkeypatch):
    attn = pytest.importorskip("fla.layers.attn", reason="fla (flash-linear-attention) is not installed")
    monkeypatch.setattr(attn, "flash_attn_func", lambda *a, **k: None)    # only built here, never run
    rec, target = _rec()
    model = _fla_model(target, attn={"layers": [1], "num_heads": 4, "num_kv_heads": 4, "qkv_bias": False,
                                     "window_size": None, "rope_theta": 10000.0})
    with pytest.raises(ValueError, match=r"layer 1 is Attention.*model\.layers\.1\.attn\.q_proj\.weight"):
        apply(model, rec)


@pytest.mark.parametrize("overrides,message", [
    (dict(num_v_heads=12), "num_v_heads=12"),
    (dict(use_gate=False), "use_gate=False"),
    (dict(output_gate_activation="sigmoid"), "output_gate_activation='sigmoid'"),
    (dict(allow_neg_eigval=True), "allow_neg_eigval=True"),
])
def test_fla_options_deltamu_cannot_represent(overrides, message):
    rec, target = _rec()
    with pytest.raises(ValueError, match=message):
        apply(_fla_model(target, **overrides), rec)


def test_deltamu_exports_apply():
    assert deltamu.apply is apply


def test_a_recommendation_from_an_fla_config_applies_to_that_fla_model_as_is():
    """The path of issue 17 end to end on the CPU: the user's fla config (fla's own MLP rounding, no override) ->
    the proxy at the base width -> a recommendation for the config's hidden_size -> apply to the model built from
    that very config: no mismatch, every parameter in a group."""
    fla_models = pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")
    from gdn.fla_config import gdn_config_from_fla
    fla = dict(hidden_size=256, num_hidden_layers=1, num_heads=6, head_dim=32, vocab_size=64,
               tie_word_embeddings=True, fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)
    target = gdn_config_from_fla(fla)
    config = SweepConfig(model=target.at_width(64))
    rec = recommend(SweepResult(config, Optimum(lr=3e-3, log2_lr=math.log2(3e-3), loss=2.0, log2_lr_std=None,
                                                on_edge=False)), 256)
    assert rec.target_model["mlp_hidden"] == 768                  # fla's 8d/3 rounded up to 256, as fla builds it
    model = fla_models.GatedDeltaNetForCausalLM(fla_models.GatedDeltaNetConfig(**fla))
    groups = apply(model, rec, generator=torch.Generator().manual_seed(0))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
