"""Pretraining sizing: parameters, Chinchilla tokens, FLOPs, GPU-hours and ZeRO memory per GPU.

Pure arithmetic, so it can size a 70B run on a laptop. Formulas and their sources:
- training FLOPs ≈ 6·N·D (Kaplan et al. 2020), Chinchilla-optimal D ≈ 20·N (Hoffmann et al. 2022);
- model states per parameter with Adam: mixed precision 2 (16-bit weights) + 2 (16-bit grads)
  + 12 (fp32 master weights, momentum, variance) = 16 bytes; fp32 training 4 + 4 + 12 = 20
  bytes, because DeepSpeed's ZeRO optimizer keeps its fp32 master partition even when the
  weights are fp32 (measured: bench/pretrain.py, 20.00 bytes per parameter and rank);
  ZeRO stage 1 partitions the optimizer states, 2 also the gradients, 3 also the weights across
  the data-parallel ranks (Rajbhandari et al. 2020, Figure 1);
- activations per layer without recomputation s·b·h·(34 + 5·a·s/h) bytes in 16-bit, and 2·s·b·h
  with full activation checkpointing (Korthikanti et al. 2022, no tensor/sequence parallelism);
  fused (flash) attention never stores the s×s scores, which drops the 5·a·s/h term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Precision = Literal["mixed", "fp32"]
Offload = Literal["none", "optimizer", "optimizer_and_params"]
GB = 1e9
CHINCHILLA_TOKENS_PER_PARAM = 20
# Weights, gradients, optimizer states: bytes per parameter (Adam).
STATE_BYTES: dict[Precision, tuple[int, int, int]] = {"mixed": (2, 2, 12), "fp32": (4, 4, 12)}
# Allocator fragmentation, communication buckets, CUDA context: kept free on every GPU.
MEMORY_HEADROOM = 0.10


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_embeddings: bool = False
    num_experts: int = 1  # Mixture of Experts: experts per layer (1 = dense)
    experts_per_token: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    gpu_memory_gb: float
    cpu_memory_gb: float  # per node
    peak_tflops: float  # per accelerator, dense, at the training precision
    mfu: float  # assumed model FLOPs utilisation for the GPU-hour estimate

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int  # per token (differs from total for MoE)
    embedding: int
    largest_layer: int  # biggest single weight; ZeRO-3 gathers one at a time


def count_parameters(m: ModelShape) -> ParamCount:
    h, kv = m.hidden_size, m.num_kv_heads * m.head_dim
    attention = h * h * 2 + h * kv * 2  # q, o: h×h; k, v: h×kv (GQA shrinks kv)
    expert = 3 * h * m.intermediate_size  # SwiGLU: gate, up, down
    router = h * m.num_experts if m.num_experts > 1 else 0
    norms = 2 * h
    embedding = m.vocab_size * h
    head = 0 if m.tie_embeddings else embedding
    per_layer_total = attention + m.num_experts * expert + router + norms
    per_layer_active = attention + m.experts_per_token * expert + router + norms
    extra = embedding + head + h  # + final norm
    return ParamCount(
        total=m.num_layers * per_layer_total + extra,
        active=m.num_layers * per_layer_active + extra,
        embedding=embedding,
        largest_layer=max(embedding, h * m.intermediate_size, h * h),
    )


def flops_per_token(m: ModelShape, active_params: int, seq_len: int) -> float:
    """Forward + backward: 6 per parameter, plus attention scores (PaLM, Appendix B)."""
    return 6 * active_params + 12 * m.num_layers * m.hidden_size * seq_len


def model_state_bytes(
    n_params: float, stage: int, dp: int, offload: Offload, precision: Precision
) -> tuple[float, float]:
    """(GPU bytes, CPU bytes) of weights + gradients + optimizer states on one rank."""
    p, g, k = (b * n_params for b in STATE_BYTES[precision])
    shard = {0: (p, g, k), 1: (p, g, k / dp), 2: (p, g / dp, k / dp), 3: (p / dp, g / dp, k / dp)}[
        stage
    ]
    weights, grads, optim = shard
    cpu = 0.0
    if offload in ("optimizer", "optimizer_and_params"):
        # ZeRO-Offload keeps the optimizer step (and its fp32 gradients) on the CPU.
        cpu += optim
        optim = 0.0
    if offload == "optimizer_and_params":
        cpu += weights
        weights = 0.0
    return weights + grads + optim, cpu


def activation_bytes(
    m: ModelShape,
    seq_len: int,
    micro_batch: int,
    checkpointing: bool,
    precision: Precision,
    flash_attention: bool = True,
) -> float:
    s, b, h, a = seq_len, micro_batch, m.hidden_size, m.num_heads
    scale = 2.0 if precision == "fp32" else 1.0  # the formula counts 16-bit activations
    scores = 0.0 if flash_attention else 5 * a * s / h
    full_layer = s * b * h * (34 + scores) * scale
    # Recomputation keeps each layer's input and rebuilds one layer at a time in backward.
    per_model = (
        m.num_layers * 2 * s * b * h * scale + full_layer
        if checkpointing
        else m.num_layers * full_layer
    )
    logits = 4 * s * b * m.vocab_size * 2  # fp32 logits and their gradient
    return per_model + logits


@dataclass(frozen=True)
class MemoryOption:
    zero_stage: int
    offload: Offload
    activation_checkpointing: bool
    micro_batch: int | None  # largest power of two that fits, None if none does
    gpu_gb: float  # per GPU at micro-batch 1
    cpu_gb_per_node: float
    fits: bool


# Cheapest first: less communication, then no CPU round trips, then no recomputation.
OPTION_ORDER: tuple[tuple[int, Offload, bool], ...] = (
    (0, "none", False),
    (1, "none", False),
    (2, "none", False),
    (3, "none", False),
    (3, "none", True),
    (3, "optimizer", True),
    (3, "optimizer_and_params", True),
)


def memory_option(
    m: ModelShape,
    n_params: float,
    cluster: Cluster,
    seq_len: int,
    stage: int,
    offload: Offload,
    checkpointing: bool,
    precision: Precision,
    max_micro_batch: int,
    flash_attention: bool = True,
) -> MemoryOption:
    budget = cluster.gpu_memory_gb * GB * (1 - MEMORY_HEADROOM)
    gpu_states, cpu_states = model_state_bytes(n_params, stage, cluster.gpus, offload, precision)
    cpu_gb_node = cpu_states * cluster.gpus_per_node / GB
    cpu_ok = cpu_gb_node <= cluster.cpu_memory_gb * (1 - MEMORY_HEADROOM)
    best, micro = None, 1
    while micro <= max_micro_batch:
        need = gpu_states + activation_bytes(
            m, seq_len, micro, checkpointing, precision, flash_attention
        )
        if need > budget:
            break
        best = micro
        micro *= 2
    gpu = gpu_states + activation_bytes(m, seq_len, 1, checkpointing, precision, flash_attention)
    return MemoryOption(
        stage,
        offload,
        checkpointing,
        best,
        round(gpu / GB, 2),
        round(cpu_gb_node, 2),
        fits=best is not None and cpu_ok,
    )


@dataclass
class Plan:
    parameters: int
    active_parameters: int
    tokens: float
    chinchilla_tokens: float
    tokens_per_parameter: float
    training_flops: float
    flops_per_token: float
    gpu_hours: float
    model_states_total_gb: float
    cluster: Cluster
    options: list[MemoryOption]
    choice: MemoryOption | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(
    m: ModelShape,
    cluster: Cluster,
    tokens: float,
    seq_len: int,
    precision: Precision = "mixed",
    max_micro_batch: int = 64,
    n_params: float | None = None,
    flash_attention: bool = True,
) -> Plan:
    """Size a run and pick the cheapest ZeRO stage / offload / checkpointing that fits.

    n_params overrides the count from the shape (e.g. "a 7B model" as 7e9 exactly).
    """
    counted = count_parameters(m)
    total = n_params if n_params is not None else counted.total
    active = n_params if n_params is not None else counted.active
    fpt = flops_per_token(m, active, seq_len)
    train_flops = 6 * active * tokens
    achieved = cluster.peak_tflops * 1e12 * cluster.mfu
    options = [
        memory_option(
            m, total, cluster, seq_len, st, off, ck, precision, max_micro_batch, flash_attention
        )
        for st, off, ck in OPTION_ORDER
    ]
    reasons, choice = [], None
    budget = cluster.gpu_memory_gb * (1 - MEMORY_HEADROOM)
    for opt in options:
        label = describe(opt)
        if opt.fits:
            choice = opt
            reasons.append(
                f"chose {label}, the cheapest option that fits: {opt.gpu_gb} GB per "
                f"GPU at micro-batch 1 of {budget:.1f} GB usable, up to micro-batch "
                f"{opt.micro_batch}"
                + (f"; {opt.cpu_gb_per_node} GB CPU per node" if opt.cpu_gb_per_node else "")
            )
            break
        reasons.append(
            f"rejected {label}: needs {opt.gpu_gb} GB per GPU at micro-batch 1 "
            f"and {opt.cpu_gb_per_node} GB CPU per node (usable: {budget:.1f} GB "
            f"and {cluster.cpu_memory_gb * (1 - MEMORY_HEADROOM):.1f} GB)"
        )
    if choice is None:
        reasons.append(
            "nothing fits: add GPUs/nodes, shorten sequences or use tensor/pipeline parallelism"
        )
    chinchilla = CHINCHILLA_TOKENS_PER_PARAM * total
    return Plan(
        parameters=int(total),
        active_parameters=int(active),
        tokens=float(tokens),
        chinchilla_tokens=float(chinchilla),
        tokens_per_parameter=round(tokens / total, 3),
        training_flops=train_flops,
        flops_per_token=fpt,
        gpu_hours=round(train_flops / achieved / 3600, 3) if achieved else float("inf"),
        model_states_total_gb=round(sum(b * total for b in STATE_BYTES[precision]) / GB, 3),
        cluster=cluster,
        options=options,
        choice=choice,
        reasons=reasons,
    )


def describe(opt: MemoryOption) -> str:
    off = "" if opt.offload == "none" else f" + {opt.offload.replace('_', ' ')} offload"
    ck = " + activation checkpointing" if opt.activation_checkpointing else ""
    return f"ZeRO-{opt.zero_stage}{off}{ck}"


def format_plan(plan: Plan) -> str:
    """The plan as a short human-readable report."""
    lines = [
        f"parameters            {plan.parameters / 1e9:,.3f} B"
        + (
            f" ({plan.active_parameters / 1e9:,.3f} B active per token)"
            if plan.active_parameters != plan.parameters
            else ""
        ),
        f"training tokens       {plan.tokens / 1e9:,.3f} B = {plan.tokens_per_parameter:g} per "
        f"parameter (Chinchilla-optimal ≈ {plan.chinchilla_tokens / 1e9:,.3f} B)",
        f"training FLOPs (6ND)  {plan.training_flops:.3e}",
        f"estimated GPU-hours   {plan.gpu_hours:,.1f} at {plan.cluster.peak_tflops:g} TFLOPS "
        f"peak and {plan.cluster.mfu:.0%} MFU",
        f"cluster               {plan.cluster.nodes} node(s) × {plan.cluster.gpus_per_node} "
        f"accelerators of {plan.cluster.gpu_memory_gb:g} GB",
        f"model states (total)  {plan.model_states_total_gb:,.1f} GB",
        "",
        f"{'ZeRO option':<66} {'GPU GB@mb1':>10} {'CPU GB/node':>11} {'max micro':>9}",
    ]
    for o in plan.options:
        lines.append(
            f"{describe(o):<66} {o.gpu_gb:>10.1f} {o.cpu_gb_per_node:>11.1f} "
            f"{o.micro_batch if o.fits else '-':>9}"
        )
    return "\n".join([*lines, "", *plan.reasons])


# ZeRO stages that can run with each offload setting (offload needs a partitioned optimizer;
# offloading the weights needs them partitioned too).
STAGES_FOR_OFFLOAD: dict[Offload, tuple[int, ...]] = {
    "none": (0, 1, 2, 3),
    "optimizer": (1, 2, 3),
    "optimizer_and_params": (3,),
}


@dataclass(frozen=True)
class StageChoice:
    zero_stage: int
    reason: str


def cheapest_zero_stage(
    m: ModelShape,
    cluster: Cluster,
    seq_len: int,
    micro_batch: int,
    offload: Offload,
    checkpointing: bool,
    precision: Precision,
    flash_attention: bool = True,
) -> StageChoice:
    """The least-communicating ZeRO stage whose model states and activations at the configured
    micro-batch fit every rank (with `offload` and `checkpointing` as configured). One rank
    shards nothing, so stage 0 fits whenever any stage does. If none fits: ZeRO-3, the
    smallest, with a reason that says what to change."""
    counted = count_parameters(m)
    budget = cluster.gpu_memory_gb * GB * (1 - MEMORY_HEADROOM)
    activations = activation_bytes(
        m, seq_len, micro_batch, checkpointing, precision, flash_attention
    )
    for stage in STAGES_FOR_OFFLOAD[offload]:
        gpu, cpu = model_state_bytes(counted.total, stage, cluster.gpus, offload, precision)
        cpu_ok = cpu * cluster.gpus_per_node <= cluster.cpu_memory_gb * GB * (1 - MEMORY_HEADROOM)
        if gpu + activations <= budget and cpu_ok:
            why = "one rank: nothing to shard" if cluster.gpus == 1 else "least communication"
            return StageChoice(
                stage,
                f"ZeRO-{stage}, the cheapest stage that fits ({why}): "
                f"{(gpu + activations) / GB:.2f} GB per rank at micro-batch {micro_batch} "
                f"of {budget / GB:.1f} GB usable on {cluster.gpus} rank(s)",
            )
    return StageChoice(
        3,
        f"no ZeRO stage fits micro-batch {micro_batch} in {budget / GB:.1f} GB per rank on "
        f"{cluster.gpus} rank(s); using ZeRO-3, the smallest: lower pretrain.micro_batch_size, "
        "enable activation_checkpointing or offload, or add ranks",
    )
