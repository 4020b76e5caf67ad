"""GDNConfig: the shape of a GDN language model, and nothing derived stored in it."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

WidthAxis = Literal["head_dim", "heads"]


# The float fields' sane ranges (low excluded): beyond them a shape overflows or the model is not a GDN anyone trains.
RATIO_RANGES = {"key_ratio": (0.0, 16.0), "expand_v": (0.0, 16.0), "mlp_ratio": (0.0, 64.0), "norm_eps": (0.0, 0.1)}


@dataclass(frozen=True)
class GDNConfig:
    width: int = 256
    """d_model; in a job, the base width d0 of the proxy"""
    depth: int = 4
    """number of blocks"""
    vocab_size: int = 256
    """byte-level by default; in a job, default: the data's vocabulary"""
    width_axis: WidthAxis = "head_dim"
    """head_dim (the paper): a fixed number of heads whose dims grow with width, head_k_dim = width * key_ratio /
    num_heads, head_v_dim = expand_v * head_k_dim; heads (many production GDNs): fixed head dims, num_heads =
    width * key_ratio / head_k_dim"""
    num_heads: int = 6
    """heads (the head_dim axis)"""
    head_k_dim: int = 32
    """per-head key dim (the heads axis; d = 256 gives the paper's 6 heads of 32)"""
    key_ratio: float = 0.75
    """key_dim = key_ratio * width (fla's expand_k): d_k = d/8 with 6 heads"""
    expand_v: float = 2.0
    """head_v_dim = expand_v * head_k_dim (d_v = d/4 with 6 heads)"""
    conv_size: int = 4
    """short causal depthwise conv on q, k, v"""
    mlp_ratio: float = 8 / 3
    """SwiGLU hidden ~ 8d/3: parameter-equivalent to a 4d MLP"""
    mlp_multiple_of: int = 32
    """round the MLP hidden size up to this"""
    norm_eps: float = 1e-6
    """every RMSNorm's epsilon"""
    tie_embeddings: bool = True
    """the embedding is the readout; in a job, set by the parametrization's readout rule"""

    def __post_init__(self) -> None:
        if self.width_axis not in ("head_dim", "heads"):
            raise ValueError(f"width_axis must be 'head_dim' or 'heads', got {self.width_axis!r}")
        for name in ("width", "depth", "vocab_size", "num_heads", "head_k_dim", "conv_size", "mlp_multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, (low, high) in RATIO_RANGES.items():
            check_range(name, getattr(self, name), low, high, low_included=False)
        self.heads_and_dims()  # raises a clear error for a width this axis cannot take

    def _whole(self, x: float, what: str, formula: str, per_width: float) -> int:
        """x as an int, or a ValueError naming the widths that would make it one."""
        if x != int(x) or x < 1:
            step = _width_step(per_width)
            raise ValueError(f"width {self.width} does not fit the {what} = {formula} = {x:g} is not a whole "
                             f"number; use a multiple of {step} (e.g. {_round_up(self.width, step)})")
        return int(x)

    # --- the shapes, derived --------------------------------------------------------------------
    def heads_and_dims(self) -> tuple[int, int, int]:
        """(H, K, V): number of heads, per-head key dim, per-head value dim."""
        key_dim = self.width * self.key_ratio
        if self.width_axis == "head_dim":
            H = self.num_heads
            K = self._whole(key_dim / H, f"head_dim axis with {H} heads: head_k_dim",
                            f"{self.key_ratio} * {self.width} / {H}", self.key_ratio / H)
        else:
            K = self.head_k_dim
            H = self._whole(key_dim / K, f"heads axis with head_k_dim {K}: num_heads",
                            f"{self.key_ratio} * {self.width} / {K}", self.key_ratio / K)
        V = K * self.expand_v
        if V != int(V):
            raise ValueError(f"head_v_dim = {self.expand_v} * {K} is not a whole number")
        return H, K, int(V)

    @property
    def mlp_hidden(self) -> int:
        return _round_up(math.ceil(self.width * self.mlp_ratio), self.mlp_multiple_of)

    def at_width(self, width: int) -> "GDNConfig":
        """The same architecture at another width, along this config's width axis."""
        return dataclasses.replace(self, width=width)

    def shapes(self) -> dict:
        H, K, V = self.heads_and_dims()
        return {"width": self.width, "depth": self.depth, "num_heads": H, "head_k_dim": K, "head_v_dim": V,
                "key_dim": H * K, "value_dim": H * V, "mlp_hidden": self.mlp_hidden,
                "vocab_size": self.vocab_size, "width_axis": self.width_axis,
                "tie_embeddings": self.tie_embeddings, "conv_size": self.conv_size, "norm_eps": self.norm_eps}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GDNConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GDNConfig fields: {sorted(unknown)}")
        return cls(**d)


def count_params(config: GDNConfig) -> int:
    """The parameter count of GDNModel(config), in closed form (tested against the module)."""
    d, L, vocab = config.width, config.depth, config.vocab_size
    H, K, V = config.heads_and_dims()
    mixer = d * (2 * H * K + 2 * H * V + 2 * H) + H * V * d + config.conv_size * (2 * H * K + H * V) + 2 * H + V
    mlp = 3 * d * config.mlp_hidden
    block = mixer + mlp + 2 * d
    readout = 0 if config.tie_embeddings else vocab * d
    return vocab * d + L * block + d + readout


CHUNK_SIZE = 64  # tokens per chunk of the chunked gated delta rule (gdn.ops: as fla's BT) and of the FLOP model below


def train_flops_per_token(config: GDNConfig) -> float:
    """FLOPs of one training token (forward + backward): 6 per matmul weight (the readout included, tied or not)
    plus the chunked gated delta rule's own work (the FLOP model of gdn-kernels.md section 6, per token and head)."""
    d, L, vocab = config.width, config.depth, config.vocab_size
    H, K, V = config.heads_and_dims()
    C = CHUNK_SIZE
    matmul_params = L * (d * (2 * H * K + 2 * H * V + 2 * H) + H * V * d + 3 * d * config.mlp_hidden) + vocab * d
    gdn_fwd = 6 * C * K + 4 * C * V + 6 * K * V
    gdn_bwd = 18 * C * K + 10 * C * V + 16 * K * V + 4 * C * C
    return 6.0 * matmul_params + L * H * (gdn_fwd + gdn_bwd)


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_range(name: str, x, low: float, high: float, low_included: bool = True) -> None:
    """A ValueError naming the field unless x is a finite number in [low, high] ((low, high] if not low_included):
    the float fields' one check, here and in gdn.spec, so that no inf or 1e308 reaches a shape or an optimizer."""
    if not (is_finite_number(x) and (low <= x if low_included else low < x) and x <= high):
        bracket = "[" if low_included else "("
        raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], got {x}")


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _width_step(per_width: float) -> int:
    """Smallest width step w such that w * per_width is a whole number."""
    from fractions import Fraction
    return Fraction(per_width).limit_denominator(10_000).denominator
