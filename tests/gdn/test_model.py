"""The model against itself along other paths, and its shapes against their formulas."""
import pytest
import torch

from gdn.config import GDNConfig, count_params, train_flops_per_token
from gdn.model import GatedDeltaNet, GDNModel
from gdn.spec import SweepConfig
from gdn.trial import build_model
from triton_env import rel_err, triton_device


@pytest.mark.parametrize("config", [
    GDNConfig(width=64, depth=2),
    GDNConfig(width=128, depth=1, tie_embeddings=False),
    GDNConfig(width=256, depth=1, width_axis="heads", head_k_dim=16),
    GDNConfig(width=48, depth=3, vocab_size=1000),
], ids=["tied", "untied", "heads-axis", "vocab1000"])
def test_param_count_matches_formula(config):
    assert GDNModel(config).num_params() == count_params(config)
    assert train_flops_per_token(config) > 6 * count_params(config) * 0.5


@pytest.mark.parametrize("width,msg", [(100, "head_dim axis"), (60, "head_dim axis")])
def test_widths_the_axis_cannot_take_are_clear_errors(width, msg):
    with pytest.raises(ValueError, match=msg):
        GDNConfig(width=width)
    with pytest.raises(ValueError, match="heads axis"):
        GDNConfig(width=200, width_axis="heads")


def _model(dtype=torch.float64):
    model, _, _ = build_model(SweepConfig(model=GDNConfig(width=48, depth=2)), 96, seed=0)
    return model.to(dtype)


def _with_backend(model: GDNModel, backend: str) -> GDNModel:
    """The same weights in a model built with another backend."""
    other = GDNModel(model.config, model.mult, backend=backend).to(next(model.parameters()).dtype)
    other.load_state_dict(model.state_dict())
    return other


def test_chunked_forward_equals_the_token_by_token_recurrence():
    """The whole model through the chunked kernel vs the naive recurrence, float64, T not a multiple of 64."""
    model = _model()
    idx = torch.randint(0, 256, (2, 70))
    chunked = _with_backend(model, "chunk")(idx)
    naive = _with_backend(model, "naive")(idx)
    err = ((chunked - naive).norm() / naive.norm()).item()
    assert err < 1e-10, err


def test_the_backend_is_chosen_once_and_reaches_every_op():
    model = GDNModel(GDNConfig(width=64, depth=2), backend="naive")
    ops = [m for m in model.modules() if hasattr(m, "backend")]
    # the model; per block 2 norms, the mixer, its 3 convs and o_norm; the final norm
    assert len(ops) == 1 + 2 * 7 + 1 and all(m.backend == "naive" for m in ops)
    assert GDNModel(GDNConfig(width=64, depth=1)).backend == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        GDNModel(GDNConfig(width=64, depth=1), backend="fast")


def test_causal():
    """Logits at position t depend on tokens <= t only."""
    model = _model()
    idx = torch.randint(0, 256, (1, 40))
    changed = idx.clone()
    changed[0, 25:] = (changed[0, 25:] + 1) % 256
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :25], b[:, :25], atol=0, rtol=0)
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_logit_multiplier_is_applied():
    config = SweepConfig(model=GDNConfig(width=32, depth=1), output_mult=1.0)
    m1, _, _ = build_model(config, 128, seed=0)
    assert m1.mult.logits == pytest.approx(1 / 4)
    tied = SweepConfig(model=GDNConfig(width=32, depth=1), readout="tied", output_mult=1.0)
    m2, _, _ = build_model(tied, 128, seed=0)
    idx = torch.randint(0, 256, (1, 8))
    assert torch.allclose(m1(idx) * 4, m2(idx), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend,dtype,tol", [("chunk", torch.float64, 1e-12), ("triton", torch.float32, 1e-5)])
def test_one_input_gemm_gives_the_six_projections_results(backend, dtype, tol, monkeypatch):
    """GatedDeltaNet.one_input_gemm: the same logits and gradients as six GEMMs, float64; and in float32 through
    the Triton kernels (in the interpreter on the CPU), whose convs read q, k, v's columns in place."""
    if backend == "triton":
        triton_device()
    small, _, _ = build_model(SweepConfig(model=GDNConfig(width=48, depth=1)), 96, seed=0)    # interpreted: small
    model = _with_backend(small.to(dtype), backend)
    idx = torch.randint(0, 256, (1, 19), generator=torch.Generator().manual_seed(3))
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    model, idx = model.to(device), idx.to(device)
    results = []
    for one in (False, True):
        monkeypatch.setattr(GatedDeltaNet, "one_input_gemm", one)
        model.zero_grad()
        logits = model(idx)
        (logits.sin().sum()).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (six, six_grads), (one, one_grads) = results
    assert six_grads.keys() == one_grads.keys()
    errors = {name: rel_err(one_grads[name], six_grads[name]) for name in six_grads}
    errors["logits"] = rel_err(one, six)
    print(f"\n{backend} {dtype}: worst relative error {max(errors.values()):.1e} ({max(errors, key=errors.get)})")
    assert max(errors.values()) < tol, errors
