"""The GDN language model, in one file: norm, mixer, MLP, block, then the model.

Per block:  x = x + mixer(attn_norm(x));  x = x + mlp(mlp_norm(x)).
Mixer (Gated DeltaNet, paper section 3.1): q, k, v = SiLU(short causal conv(W x)); q, k L2-normalised per head;
beta = sigmoid(W_b x); log alpha = g = -exp(A_log) * softplus(W_a x + dt_bias);
S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T;  o_t = S_t^T q_t;
out = W_o( RMSNorm_head(o_t * o_mult) * SiLU(W_g x) ).

Module and parameter names follow fla's GatedDeltaNet (q_proj, a_proj, A_log, q_conv1d, o_norm, attn_norm,
mlp.gate_proj, embeddings, norm, lm_head), so the parametrization table reads both models the same way.
Forward multipliers (logits, o_t) come from the table; init is the table's job (gdn.init.init_model).
The ops' backend ("auto", "triton", "chunk" or "naive"; gdn.ops.backend) is chosen once, at construction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdn.config import GDNConfig
from gdn.ops.backend import check_backend
from gdn.ops.gated_delta_rule import gated_delta_rule
from gdn.ops.rms_norm import rms_norm
from gdn.ops.short_conv import causal_conv1d_silu
from gdn.parametrization import ForwardMultipliers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, backend: str = "auto"):
        super().__init__()
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, backend=self.backend)   # in the autocast dtype under autocast


class GatedRMSNorm(RMSNorm):
    """RMSNorm over each head's value dim, times SiLU of the output gate (fla's FusedRMSNormGated)."""

    def forward(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return rms_norm(o, self.weight, self.eps, gate=gate, backend=self.backend)


class ShortConv(nn.Conv1d):
    """Depthwise causal conv over time, then SiLU (gdn.ops.short_conv). Input and output (B, T, C)."""

    def __init__(self, channels: int, kernel_size: int, backend: str = "auto"):
        super().__init__(channels, channels, kernel_size, groups=channels, padding=kernel_size - 1, bias=False)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv1d_silu(x, self.weight, backend=self.backend)


class GatedDeltaNet(nn.Module):
    # True: the six input projections as one GEMM on their weights concatenated (one read of x, one launch each way
    # instead of six), q, k, v's convs reading their column slices in place; the same parameters and math, rounded
    # in another order. Off: in the packed trainer on an H100 (2026-12-08, benchmarks/packing.py --one-input-gemm;
    # docs/benchmarks.md) it was slower, 2,194,174 against 2,239,530 tokens/s at d = 128, K = 16 and 1,217,615
    # against 1,269,572 at d = 256, K = 8, with a higher peak (12.6 against 11.3 GiB there): the concatenated weight
    # and the strided slices (the gate's, copied by the norm) cost more than the launches it saves under the graph.
    # Off where hooks must see each projection's own output (gdn.coordcheck) in any case.
    one_input_gemm = False

    def __init__(self, config: GDNConfig, mult: ForwardMultipliers, backend: str = "auto"):
        super().__init__()
        d = config.width
        H, K, V = config.heads_and_dims()
        self.num_heads, self.head_k_dim, self.head_v_dim = H, K, V
        self.q_proj = nn.Linear(d, H * K, bias=False)
        self.k_proj = nn.Linear(d, H * K, bias=False)
        self.v_proj = nn.Linear(d, H * V, bias=False)
        self.a_proj = nn.Linear(d, H, bias=False)
        self.b_proj = nn.Linear(d, H, bias=False)
        self.g_proj = nn.Linear(d, H * V, bias=False)
        self.o_proj = nn.Linear(H * V, d, bias=False)
        self.q_conv1d = ShortConv(H * K, config.conv_size, backend)
        self.k_conv1d = ShortConv(H * K, config.conv_size, backend)
        self.v_conv1d = ShortConv(H * V, config.conv_size, backend)
        self.A_log = nn.Parameter(torch.zeros(H))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.o_norm = GatedRMSNorm(V, config.norm_eps, backend)
        self.scale = K ** -0.5 if mult.o is None else mult.o
        self.backend = backend

    def projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x's q, k, v (before their convs), a, b and output-gate projections, each (B, T, width of its own)."""
        projs = (self.q_proj, self.k_proj, self.v_proj, self.a_proj, self.b_proj, self.g_proj)
        if not self.one_input_gemm:
            return tuple(proj(x) for proj in projs)
        y = F.linear(x, torch.cat([proj.weight for proj in projs]))           # (B, T, sum of the widths)
        return y.split([proj.out_features for proj in projs], dim=-1)         # views, no copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_k_dim, self.head_v_dim
        q, k, v, a, b, gate = self.projections(x)
        q = self.q_conv1d(q).view(B, T, H, K)
        k = self.k_conv1d(k).view(B, T, H, K)
        v = self.v_conv1d(v).view(B, T, H, V)
        beta = torch.sigmoid(b.float())                                                  # (B, T, H)
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())     # log alpha
        o, _ = gated_delta_rule(q, k, v, g, beta, scale=self.scale, use_qk_l2norm=True,
                                backend=self.backend)                                    # (B, T, H, V)
        o = self.o_norm(o, gate.reshape(B, T, H, V)).reshape(B, T, H * V)
        return self.o_proj(o)


class MLP(nn.Module):
    """SwiGLU: down(SiLU(gate(x)) * up(x))."""

    def __init__(self, config: GDNConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.width, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GDNConfig, mult: ForwardMultipliers, backend: str = "auto"):
        super().__init__()
        self.attn_norm = RMSNorm(config.width, config.norm_eps, backend)
        self.attn = GatedDeltaNet(config, mult, backend)
        self.mlp_norm = RMSNorm(config.width, config.norm_eps, backend)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        x = x + self.mlp(self.mlp_norm(x))
        return x


class GDNModel(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab). Build, then initialise with gdn.init.init_model.

    backend: how every op of the model runs (gdn.ops.backend): "auto" (Triton kernels on CUDA where they apply),
    "triton", or "chunk" / "naive" (plain PyTorch; "naive" runs the gated delta rule token by token)."""

    def __init__(self, config: GDNConfig, mult: ForwardMultipliers = ForwardMultipliers(), backend: str = "auto"):
        super().__init__()
        check_backend(backend)
        self.config = config
        self.mult = mult
        self.backend = backend
        self.embeddings = nn.Embedding(config.vocab_size, config.width)
        self.layers = nn.ModuleList(Block(config, mult, backend) for _ in range(config.depth))
        self.norm = RMSNorm(config.width, config.norm_eps, backend)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.width, config.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(idx)                                   # (B, T, d)
        for block in self.layers:
            x = block(x)
        x = self.norm(x)
        readout = self.embeddings.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, readout)                              # (B, T, vocab)
        # A multiplier of 1 (the packed trainer's skeleton, whose trials' multipliers are their losses' scales)
        # would cost a pass over the logits each way for nothing.
        return logits if self.mult.logits == 1.0 else logits * self.mult.logits

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embeddings.weight.numel() + (0 if self.lm_head is None else self.lm_head.weight.numel())
        return n
