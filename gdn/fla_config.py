"""A user's fla GatedDeltaNetConfig (its config.json, as a dict) -> the GDNConfig of that architecture at a width.

The proxy deltamu tunes is then the user's own model at the base width, and a recommendation's target_model is the
user's model. Everything fla's config can say that deltamu's model does not do is refused, field by field, never
ignored. Torch-free: the API reads it.

fla (0.6.0) sizes its layers as: key_dim = num_heads * head_dim (independent of hidden_size), head_v_dim = head_dim *
expand_v, the SwiGLU MLP's hidden size = intermediate_size, or int(hidden_size * hidden_ratio * 2/3) rounded up to a
multiple of 256. On deltamu's head_dim axis those become key_ratio = num_heads * head_dim / hidden_size and
mlp_ratio = hidden_ratio * 2/3 with mlp_multiple_of = 256, which give fla's sizes at hidden_size exactly (for a whole
hidden_size, int() and ceil() of hidden_size * hidden_ratio * 2/3 round to the same multiple of 256).
"""
from __future__ import annotations

from fractions import Fraction

from gdn.config import GDNConfig, WidthAxis

FLA_MLP_MULTIPLE = 256
# fla fields that change nothing deltamu measures (kernels, fusion, caching, special tokens, position limit, init
# range: deltamu's table sets the init)
FLA_IGNORED = frozenset({
    "attn_mode", "max_position_embeddings", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id",
    "initializer_range", "fuse_norm", "fuse_swiglu", "fuse_cross_entropy", "fuse_linear_cross_entropy",
    "model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "keys_to_ignore_at_inference",
    "_name_or_path", "return_dict", "output_hidden_states", "output_attentions", "tie_encoder_decoder",
    "is_encoder_decoder", "chunk_size_feed_forward", "use_return_dict",
})
FLA_OPTIONS = frozenset({"use_gate", "use_short_conv", "allow_neg_eigval", "hidden_act", "output_gate_activation",
                         "attnres_block_size", "use_l2warp", "num_v_heads", "attn"})
FLA_READ = frozenset({"hidden_size", "num_hidden_layers", "num_heads", "head_dim", "expand_v", "conv_size",
                      "vocab_size", "norm_eps", "tie_word_embeddings", "hidden_ratio", "intermediate_size",
                      "num_v_heads"})
FLA_DEFAULTS = {"hidden_size": 2048, "num_hidden_layers": 21, "num_heads": 6, "head_dim": 256, "expand_v": 2.0,
                "conv_size": 4, "vocab_size": 32000, "norm_eps": 1e-6, "tie_word_embeddings": False,
                "hidden_ratio": 4, "intermediate_size": None, "num_v_heads": None}


def gdn_config_from_fla(fla: dict, width_axis: WidthAxis = "head_dim") -> GDNConfig:
    """The GDNConfig of fla's model at its own hidden_size; .at_width(d0) is the proxy. ValueError lists every field
    deltamu cannot represent."""
    if fla.get("model_type", "gated_deltanet") != "gated_deltanet":
        raise ValueError(f"model_type {fla['model_type']!r}: deltamu builds fla's gated_deltanet models only")
    problems = fla_unsupported(fla)
    unknown = sorted(set(fla) - FLA_READ - FLA_IGNORED - FLA_OPTIONS)
    if unknown:
        problems.append(f"fields deltamu does not know: {', '.join(unknown)}")
    if problems:
        raise ValueError("this fla config has what deltamu's model does not: " + "; ".join(problems))
    c = {**FLA_DEFAULTS, **{k: v for k, v in fla.items() if k in FLA_READ}}
    d, heads, head_dim = int(c["hidden_size"]), int(c["num_heads"]), int(c["head_dim"])
    if c["intermediate_size"] is not None:            # a fixed size: the same share of the width at every width
        mlp = dict(mlp_ratio=float(Fraction(int(c["intermediate_size"]), d)), mlp_multiple_of=1)
    else:
        mlp = dict(mlp_ratio=float(Fraction(int(c["hidden_ratio"]) * 2, 3)), mlp_multiple_of=FLA_MLP_MULTIPLE)
    config = GDNConfig(width=d, depth=int(c["num_hidden_layers"]), vocab_size=int(c["vocab_size"]),
                       width_axis=width_axis, num_heads=heads, head_k_dim=head_dim,
                       key_ratio=float(Fraction(heads * head_dim, d)), expand_v=float(c["expand_v"]),
                       conv_size=int(c["conv_size"]), norm_eps=float(c["norm_eps"]),
                       tie_embeddings=bool(c["tie_word_embeddings"]), **mlp)
    expected = {"mlp_hidden": fla_mlp_hidden(c), "head_k_dim": head_dim, "num_heads": heads,
                "head_v_dim": int(head_dim * c["expand_v"])}
    got = config.shapes()
    wrong = [f"{k} {got[k]} (fla: {v})" for k, v in expected.items() if got[k] != v]
    if wrong:
        raise ValueError(f"deltamu's model cannot reproduce this fla config's sizes: {', '.join(wrong)}")
    return config


def fla_unsupported(fla: dict) -> list[str]:
    """The options of an fla config (a dict of its fields) that deltamu's model does not have, each a problem naming
    what to change; [] when there are none. The one list of them: gdn_config_from_fla and gdn.apply both ask it."""
    get = fla.get
    problems = []
    if get("num_v_heads") not in (None, get("num_heads", FLA_DEFAULTS["num_heads"])):
        problems.append(f"num_v_heads={get('num_v_heads')} != num_heads={get('num_heads', FLA_DEFAULTS['num_heads'])}: "
                        "grouped value heads are not in deltamu's model")
    if not get("use_gate", True):
        problems.append("use_gate=False: deltamu's model has the output gate (o_norm(o) * silu(g_proj x))")
    if get("output_gate_activation", "swish") not in ("swish", "silu"):
        problems.append(f"output_gate_activation={get('output_gate_activation')!r}: deltamu's gate is swish/silu")
    if get("allow_neg_eigval", False):
        problems.append("allow_neg_eigval=True: deltamu's beta is in (0, 1), not (0, 2)")
    if not get("use_short_conv", True):
        problems.append("use_short_conv=False: deltamu's model has the short conv on q, k, v")
    if get("hidden_act", "swish") not in ("swish", "silu"):
        problems.append(f"hidden_act={get('hidden_act')!r}: deltamu's MLP is SwiGLU")
    if get("attnres_block_size") is not None:
        problems.append("attnres_block_size is set: attention residuals are not in deltamu's model")
    if get("use_l2warp", False):
        problems.append("use_l2warp=True: deltamu's loss is plain cross-entropy")
    if get("attn") is not None:
        problems.append(f"attn={get('attn')!r}: hybrid layers of softmax attention have no rule in deltamu's table")
    return problems


def fla_mlp_hidden(c: dict) -> int:
    """fla's SwiGLU hidden size for config fields c (fla.modules.mlp.GatedMLP)."""
    if c.get("intermediate_size") is not None:
        return int(c["intermediate_size"])
    size = int(c["hidden_size"] * (c.get("hidden_ratio") or 4) * 2 / 3)
    return FLA_MLP_MULTIPLE * ((size + FLA_MLP_MULTIPLE - 1) // FLA_MLP_MULTIPLE)
