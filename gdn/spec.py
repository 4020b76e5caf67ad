"""The job's types, written once: what a tuning job asks for (model, optimizer, schedule, data, sweep config), what
one trial is and what it yields, and what a recommendation says. Plain dataclasses that import no torch, so the
service validates a request into them (service.schemas) and the trainer, the packed trainer and the
recommendation all read the same fields with the same defaults and checks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gdn.config import GDNConfig, check_range, is_finite_number
from gdn.parametrization import OPTIMIZERS, WEIGHT_DECAY_RULES, Parametrization, get_parametrization

BYTE_VOCAB = 256                 # the byte-level tokenizer's vocabulary
COMPLETED, DIVERGED = "COMPLETED", "DIVERGED"
BACKENDS = ("auto", "chunk", "naive", "triton")   # the gated delta rule's backends (gdn.ops)
DTYPES = ("auto", "float32", "float64")
LR_MAX = 1e6                     # no learning rate (peak or floor) is larger: beyond it a request is a mistake
MULT_MAX = 1e6                   # likewise for the tuned output and init multipliers,
GRAD_CLIP_MAX = 1e6              # the clip's norm
WEIGHT_DECAY_MAX = 1e3           # and the weight decay


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adamw"
    """adamw | sgd (SGD with Nesterov momentum)"""
    weight_decay: float | None = None
    """default: 0.1 for AdamW, 0 for SGD (the paper's settings); applied only to the roles the table decays"""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's betas"""
    eps: float = 1e-8
    """AdamW's epsilon"""
    momentum: float = 0.98
    """SGD's Nesterov momentum (the paper needed 0.98 for stability)"""
    grad_clip: float = 1.0
    """global grad-norm clip; 0 disables"""
    weight_decay_rule: str = "coupled"
    """coupled: torch's decoupled decay lr x wd per step, so a group at LR multiplier r decays r x as fast (muP's
    hidden matrices at m x width: 1/m); independent: each decayed group's wd is divided by its LR multiplier, so the
    per-step decay base_lr x wd is the same at every width (gdn.parametrization, WEIGHT_DECAY_RULES)"""

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.weight_decay_rule not in WEIGHT_DECAY_RULES:
            raise ValueError(f"weight_decay_rule must be one of {WEIGHT_DECAY_RULES}, got {self.weight_decay_rule!r}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", 0.1 if self.name == "adamw" else 0.0)
        check_range("weight_decay", self.weight_decay, 0.0, WEIGHT_DECAY_MAX)
        check_range("grad_clip", self.grad_clip, 0.0, GRAD_CLIP_MAX)
        check_range("eps", self.eps, 0.0, 1.0, low_included=False)
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {len(self.betas)}")
        for name, x in (("momentum", self.momentum), ("betas", self.betas[0]), ("betas", self.betas[1])):
            if not (is_finite_number(x) and 0 <= x < 1):
                raise ValueError(f"{name} must lie in [0, 1), got {x}")


@dataclass(frozen=True)
class ScheduleSpec:
    steps: int = 200
    """optimizer steps of every trial"""
    warmup_steps: int = 20
    """linear warmup, then cosine decay to min_lr"""
    batch_size: int = 16
    """sequences per step"""
    seq_len: int = 128
    """tokens per sequence"""
    min_lr: float = 0.0
    """absolute, for a group of LR multiplier 1; scaled per group like the peak LR"""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("steps, batch_size and seq_len must be >= 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must lie in [0, steps={self.steps}], got {self.warmup_steps}")
        check_range("min_lr", self.min_lr, 0.0, LR_MAX)


PRETOKENIZED_SUFFIXES = (".bin", ".npy")      # token ids, memory-mapped
TABLE_SUFFIXES = (".jsonl", ".parquet", ".arrow")   # rows with a text column, read with `datasets` (a .json file
                                                     # stays text, as before)
TOKEN_DTYPES = ("uint16", "uint32")
BYTES_TOKENIZER = "bytes"


@dataclass(frozen=True)
class DataSpec:
    source: str = "builtin"
    """builtin; a UTF-8 text file or folder; a .jsonl / .parquet / .arrow file (or a folder of only such files, of
    one kind) with a text column; or pre-tokenized ids in a .bin (raw, token_dtype) or .npy. On the service: under one of its
    allowed data dirs"""
    vocab_size: int | None = None
    """required for pre-tokenized ids; with a tokenizer file, its vocabulary (default: read from the file);
    byte-level (256) otherwise"""
    tokenizer: str = BYTES_TOKENIZER
    """bytes (byte-level, vocab 256), a tokenizer.json of the `tokenizers` library, or a tiktoken BPE file (a
    local path; nothing is downloaded). Text corpora only"""
    text_column: str = "text"
    """the column of a .jsonl / .parquet / .arrow corpus that holds the text"""
    token_dtype: str | None = None
    """the ids' type in a .bin: uint16 or uint32 (default: uint16 up to vocab 65,536, else uint32); a .npy says
    its own"""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("source must not be empty")
        if not self.tokenizer or not self.text_column:
            raise ValueError("tokenizer and text_column must not be empty")
        if self.vocab_size is not None and not (isinstance(self.vocab_size, int) and 1 <= self.vocab_size <= 1 << 32):
            raise ValueError(f"vocab_size must be an integer in [1, 2^32], got {self.vocab_size!r}")
        if self.token_dtype is not None and self.token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"token_dtype must be one of {TOKEN_DTYPES}, got {self.token_dtype!r}")
        if self.pretokenized:
            if not self.vocab_size:
                raise ValueError(f"a {self.source.rsplit('.', 1)[-1]} corpus of token ids needs its vocab_size")
            if self.tokenizer != BYTES_TOKENIZER:
                raise ValueError("a corpus of token ids is already tokenized: it takes no tokenizer")
            if self.token_dtype == "uint16" and self.vocab_size > 1 << 16:
                raise ValueError(f"vocab_size {self.vocab_size} does not fit token_dtype uint16: use uint32")
        elif self.tokenizer == BYTES_TOKENIZER and self.vocab_size not in (None, BYTE_VOCAB):
            raise ValueError(f"text corpora with the bytes tokenizer are byte-level (vocab 256); "
                             f"vocab_size={self.vocab_size} needs a tokenizer file or a corpus of token ids")

    @property
    def pretokenized(self) -> bool:
        return self.source.endswith(PRETOKENIZED_SUFFIXES)

    @property
    def bin_dtype(self) -> str:
        """The ids' type of a .bin."""
        return self.token_dtype or ("uint16" if (self.vocab_size or 0) <= 1 << 16 else "uint32")

    @property
    def loss_unit(self) -> str:
        """What one unit of this corpus's loss is: nats per byte for the byte-level tokenizer, else per token."""
        return "nats per byte" if not self.pretokenized and self.tokenizer == BYTES_TOKENIZER else "nats per token"


@dataclass(frozen=True)
class SweepConfig:
    """Everything of a tuning job except its LR grid and seeds. `model` is the proxy at the base width."""
    model: GDNConfig = field(default_factory=GDNConfig)
    parametrization: str = "mup"
    readout: str | None = None           # None: the preset's default readout rule
    output_mult: float | None = None     # a constant logit multiplier, tuned at the base width and carried as is
    init_mult: float | None = None       # sigma_0 of the matrices x this, likewise (None: the preset's, BASE_MULTS)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval_batches: int = 8

    def __post_init__(self) -> None:
        for name in ("output_mult", "init_mult"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 0.0, MULT_MAX, low_included=False)
        self.param()  # raises on an unknown preset or readout
        if self.eval_batches < 1:
            raise ValueError("eval_batches must be >= 1")

    @property
    def base_width(self) -> int:
        return self.model.width

    def param(self) -> Parametrization:
        return get_parametrization(self.parametrization, self.readout, self.output_mult, self.init_mult,
                                   self.optimizer.name, self.optimizer.weight_decay_rule)

    def model_at(self, width: int) -> GDNConfig:
        """The proxy's architecture at `width`, tied or not as the readout rule says."""
        return dataclasses.replace(self.model, width=width, tie_embeddings=self.param().readout.tied)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        d = dict(d)
        try:
            nested = {"model": GDNConfig.from_dict, "optimizer": _from(OptimizerSpec),
                      "schedule": _from(ScheduleSpec), "data": _from(DataSpec)}
            for key, make in nested.items():
                if key in d:
                    d[key] = make(d[key])
            return _from(cls)(d)
        except TypeError as e:  # unknown or missing fields
            raise ValueError(str(e)) from None


def _from(cls):
    def make(d: dict):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)
    return make


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a sweep config trained at one lr and seed (and width), and how it is run. How it is run (device,
    dtype, backend, CUDA graphs) changes the figures, not the science: each result records what ran."""
    config: SweepConfig
    lr: float
    seed: int = 0
    width: int | None = None        # None: the base width (a proxy trial); else a trial of the transfer study
    device: str = "auto"            # "auto": CUDA when available
    dtype: str = "auto"             # "auto": bf16 autocast on CUDA, float32 on CPU; or "float32" / "float64"
    backend: str = "auto"           # the gated delta rule's backend (gdn.ops): auto | chunk | naive | triton
    cuda_graphs: bool = True        # on CUDA, a pack replays its steps from a CUDA graph (gdn.packed)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0, LR_MAX, low_included=False)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def at_width(self) -> int:
        return self.width or self.config.base_width


@dataclass
class CurvePoint:
    step: int            # optimizer steps done
    tokens: int          # training tokens seen
    loss: float          # mean training loss over the steps since the previous point
    lr: float            # base LR (multiplier 1) at this step
    grad_norm: float     # global grad norm before clipping, at this step
    seconds: float       # wall time since the trial started


@dataclass
class TrialResult:
    status: str                      # COMPLETED | DIVERGED
    final_val_loss: float
    curve: list[CurvePoint]
    diverged_step: int | None
    reason: str | None
    tokens: int
    seconds: float
    num_params: int
    data_sha256: str
    device: str
    backend: str = "auto"            # what the trial ran: the gated delta rule's backend as asked for
    trainer: str = "lone"            # "lone" (gdn.train.train_trial) | "pack" (gdn.packed), with or without graphs
    cuda_graphs: bool = False        # its steps replayed from a CUDA graph

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialResult":
        return cls(**{**d, "curve": [CurvePoint(**p) for p in d["curve"]]})


class TrialCancelled(Exception):
    """Raised by the trainers when should_stop() says so."""


# ---- what a recommendation says ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecommendedGroup:
    """One role's hyperparameters at the target width (the table's Group, with the tuned lr applied)."""
    role: str
    patterns: tuple[str, ...]
    """fnmatch patterns of the parameter names in this group, ours and fla's"""
    lr: float
    min_lr: float
    lr_multiplier: float
    """lr / base_lr at this width"""
    init: str
    """normal | zeros | ones | conv_uniform | gdn_gate (gdn.parametrization.Init)"""
    init_std: float | None
    """the std of a normal (or zeros) init; null for the fixed inits"""
    weight_decay: float
    clip_weight: float
    """this group's gradient weight in the norm the global clip compares"""
    init_bound: float | None = None
    """the bound b of a uniform init U(-b, b) (conv_uniform: m^std_exp / sqrt(kernel size)); null otherwise"""
    init_note: str = ""
    """the init in words, complete for every kind (the fixed inits included), e.g. the GDN gate's ranges"""


@dataclass(frozen=True)
class TransferEvidence:
    """What the transfer study (docs/transfer.md) measured for one (parametrization, optimizer)."""
    max_width_mult: float
    """the widest target / base ratio at which the base width's lr was checked"""
    holds: bool
    """did the base width's lr transfer there (argmin stable, no worse than SP tuned by hand)"""
    summary: str
    min_steps: int | None = None
    """the shortest horizon (steps) at which it held, where a shorter one was measured and did not"""
    vocab_sizes: tuple[int, ...] = (256,)
    """the vocabularies the study measured it at (256: byte level)"""
    vocab_max_width_mults: tuple[float, ...] = ()
    """the widest ratio checked at each of vocab_sizes, where they differ (empty: max_width_mult at every one)"""

    @classmethod
    def from_dict(cls, d: dict) -> "TransferEvidence":
        """From its JSON (gdn/transfer_evidence.json's rows, or a recommendation's answer): other keys ignored, the
        vocab lists made tuples, fields an older answer lacks left at their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})

    def max_width_mult_at(self, vocab_size: int) -> tuple[float, int | None]:
        """The widest ratio checked at the smallest measured vocabulary at least `vocab_size` (the largest measured,
        above them all), and that vocabulary; (max_width_mult, None) where the study did not split it by vocab."""
        if not self.vocab_max_width_mults:
            return self.max_width_mult, None
        measured = sorted(zip(self.vocab_sizes, self.vocab_max_width_mults))
        vocab, mult = next(((v, m) for v, m in measured if v >= vocab_size), measured[-1])
        return mult, vocab


@dataclass(frozen=True)
class Recommendation:
    """The hyperparameters for a target width, from a sweep's optimum (gdn.recommend.recommend)."""
    parametrization_version: str
    parametrization: dict            # the preset, its readout and base-width multipliers, the width axis
    optimizer: OptimizerSpec
    base_width: int
    target_width: int
    width_mult: float
    base_lr: float
    base_lr_log2_std: float | None
    optimum_on_edge: bool
    warnings: list[str]
    transfer_evidence: TransferEvidence | None
    schedule: ScheduleSpec
    groups: list[RecommendedGroup]
    forward_multipliers: dict        # {"logits": x, "gdn_scale": the gated delta rule's `scale`}
    target_model: dict               # shapes and parameter count
    proxy_model: dict
    cost: dict                       # training FLOPs of proxy and target, the sweep's share
    tokens: int | None = None        # the token budget asked for (None: the proxy's horizon, base_lr as measured)
    proxy_lr: float | None = None    # the base width's measured optimum at the proxy's horizon; base_lr is it x the
                                     # horizon factor when `tokens` is given
    horizon: dict | None = None      # with `tokens`: the horizon fit and its prediction (gdn.recommend.horizon_answer)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for g in d["groups"]:
            g["patterns"] = list(g["patterns"])
        return d
