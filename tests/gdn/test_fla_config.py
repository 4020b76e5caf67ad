"""An fla GatedDeltaNetConfig read as deltamu's GDNConfig: fla's sizes reproduced at its width, the same architecture
at the base width, and what deltamu's model does not build refused by name."""
import pytest

from gdn.config import count_params
from gdn.fla_config import fla_mlp_hidden, gdn_config_from_fla


@pytest.mark.parametrize("hidden,head_dim,mlp", [(2048, 256, 5632), (1024, 128, 2816), (256, 32, 768)])
def test_fla_sizes_at_its_width(hidden, head_dim, mlp):
    fla = {"hidden_size": hidden, "num_heads": 6, "head_dim": head_dim, "num_hidden_layers": 3, "vocab_size": 1000}
    shapes = gdn_config_from_fla(fla).shapes()
    assert (shapes["width"], shapes["num_heads"], shapes["head_k_dim"], shapes["head_v_dim"]) == \
        (hidden, 6, head_dim, 2 * head_dim)
    assert shapes["mlp_hidden"] == mlp == fla_mlp_hidden(fla)        # fla rounds 8d/3 up to a multiple of 256
    assert shapes["tie_embeddings"] is False and shapes["vocab_size"] == 1000 and shapes["depth"] == 3


def test_the_proxy_is_the_same_architecture_at_the_base_width():
    target = gdn_config_from_fla({"hidden_size": 1024, "num_heads": 6, "head_dim": 128, "intermediate_size": 3000})
    proxy = target.at_width(256)
    assert proxy.shapes()["head_k_dim"] == 32 and proxy.shapes()["num_heads"] == 6     # the head_dim axis
    assert target.shapes()["mlp_hidden"] == 3000 and proxy.shapes()["mlp_hidden"] == 750   # a fixed share of d
    fla = {"hidden_size": 1024, "num_heads": 6, "head_dim": 128}
    heads = gdn_config_from_fla(fla, width_axis="heads")                # the same model, grown by heads
    assert heads.at_width(512).shapes()["num_heads"] == 3 and heads.at_width(512).shapes()["head_k_dim"] == 128
    assert count_params(heads) == count_params(gdn_config_from_fla(fla))


@pytest.mark.parametrize("field,value,says", [
    ("num_v_heads", 12, "grouped value heads"), ("use_gate", False, "use_gate"),
    ("allow_neg_eigval", True, "allow_neg_eigval"), ("attn", {"layers": [1], "num_heads": 4}, "softmax attention"),
    ("output_gate_activation", "sigmoid", "output_gate_activation"), ("mystery", 1, "does not know: mystery")])
def test_what_deltamu_does_not_build_is_refused_by_name(field, value, says):
    with pytest.raises(ValueError, match=says):
        gdn_config_from_fla({"hidden_size": 256, "num_heads": 6, "head_dim": 32, field: value})
    with pytest.raises(ValueError, match="gated_deltanet"):
        gdn_config_from_fla({"model_type": "llama"})
