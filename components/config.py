"""The one typed schema of params.yaml.

Every knob of every stage is declared here; unknown keys and out-of-range values are rejected
when the file is loaded, with the offending key and the allowed values in the message.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TasksParams(_Section):
    """Rows per generated task file (components/data/tasks.py) and the multi-turn share of the
    SFT rows; the split rule is fixed."""

    sft_train: int = Field(default=4000, ge=1)
    prefs_train: int = Field(default=2000, ge=1)
    prefs_test: int = Field(default=200, ge=1)
    eval: int = Field(default=300, ge=1)
    # Fraction of sft_train rows that are two-turn chats: an earlier question of the same family
    # and its answer come first, so the model learns to answer the last turn in context.
    sft_multi_turn: float = Field(default=0.25, ge=0, le=1)


class IngestParams(_Section):
    unicode_form: Literal["NFC", "NFKC"] = "NFC"
    sources: tuple[str, ...] = Field(min_length=1)
    # Larger records are quarantined, not split: a many-megabyte "document" is a dump or a
    # crawl artefact, and would stall every per-document block downstream.
    max_doc_chars: int = Field(default=5_000_000, ge=1)


class ValidateRawParams(_Section):
    min_chars: int = Field(ge=1)
    max_chars: int = Field(ge=1)


class NearDedupParams(_Section):
    enabled: bool = True
    ngram: int = Field(default=5, ge=1)  # word shingle size
    bands: int = Field(default=14, ge=1)  # LSH bands × rows = MinHash permutations
    rows: int = Field(default=8, ge=1)
    threshold: float = Field(default=0.8, gt=0, le=1)  # Jaccard at which docs are duplicates


class EngineParams(_Section):
    """Where the refinery's per-document blocks run (components/data/engine.py)."""

    kind: Literal["local", "dask"] = "local"
    # Dask scheduler to join (e.g. tcp://10.0.0.5:8786); None starts a local cluster.
    address: str | None = None
    workers: int = Field(default=2, ge=1)  # local cluster worker processes
    docs_per_partition: int = Field(default=2000, ge=1)


# The rules a per-source rule set may change (components/data/refinery.py: the judge phase, and
# the quality model's threshold in the polish phase).
RULE_SET_KEYS = (
    "min_words",
    "max_words",
    "min_alpha_ratio",
    "max_symbol_ratio",
    "max_duplicate_line_fraction",
    "max_duplicate_line_char_fraction",
    "min_language_score",
    "min_language_share",
    "c4_remove_citations",
    "c4_line_terminal_punct",
    "c4_line_min_words",
    "c4_line_javascript",
    "c4_line_policy",
    "c4_filter_lorem_ipsum",
    "c4_filter_curly_bracket",
    "c4_max_word_length",
    "c4_min_sentences",
    "fineweb_line_punct_min",
    "fineweb_short_line_max",
    "fineweb_char_duplicates_max",
    "fineweb_newline_ratio_max",
    "toxic_line_threshold",
    "max_toxic_line_fraction",
    "quality_model_keep",  # the polish phase's threshold, from the one model fitted
)


class CurateParams(_Section):
    # None disables a check (datatrove convention).
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    min_alpha_ratio: float | None = Field(default=None, ge=0, le=1)
    max_symbol_ratio: float | None = Field(default=None, ge=0)
    max_duplicate_line_fraction: float | None = Field(default=None, ge=0, le=1)
    max_duplicate_line_char_fraction: float | None = Field(default=None, ge=0, le=1)
    max_chars_per_doc: int = Field(ge=200)
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes kept; empty disables language ID
    min_language_score: float | None = Field(default=0.5, ge=0, le=1)
    # Share of the prose (code left out, per paragraph) that must be in `languages`.
    min_language_share: float | None = Field(default=None, ge=0, le=1)
    # C4 line rules (published: all on, 3 words) — a removed line is counted per rule.
    c4_remove_citations: bool = True
    c4_line_terminal_punct: bool = True
    c4_line_min_words: int | None = Field(default=3, ge=1)
    c4_line_javascript: bool = True
    c4_line_policy: bool = True
    # C4 document rules (published values as defaults; None/false switches one off).
    c4_filter_lorem_ipsum: bool = True
    c4_filter_curly_bracket: bool = True
    c4_max_word_length: int | None = Field(default=1000, ge=1)
    c4_min_sentences: int | None = Field(default=5, ge=1)
    # FineWeb document rules.
    fineweb_line_punct_min: float | None = Field(default=0.12, ge=0, le=1)
    fineweb_short_line_max: float | None = Field(default=0.67, ge=0, le=1)
    fineweb_char_duplicates_max: float | None = Field(default=0.01, ge=0, le=1)
    fineweb_newline_ratio_max: float | None = Field(default=0.3, ge=0)
    # Quality model (components/data/quality_model.py), trained against the reference sample:
    # the share of that sample (out of fold) its threshold keeps; None switches it off.
    quality_model_keep: float | None = Field(default=0.97, gt=0, le=1)
    toxic_line_threshold: float = Field(default=0.8, gt=0, le=1)
    max_toxic_line_fraction: float | None = Field(default=0.05, ge=0, le=1)
    redact_pii: bool = True
    decontam_ngram: int | None = Field(default=13, ge=3)  # None disables decontamination
    decontam_min_words: int = Field(default=8, ge=1)
    near_dedup: NearDedupParams = NearDedupParams()
    engine: EngineParams = EngineParams()
    # Per-source rule sets (as Dolma and NeMo Curator configure them): a named set overrides
    # any of RULE_SET_KEYS; `source_rule_set` names each source's set, and a source not listed
    # gets the section's own values (the rule set "default").
    rule_sets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source_rule_set: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rule_sets_are_valid(self) -> CurateParams:
        for name, overrides in self.rule_sets.items():
            unknown = sorted(set(overrides) - set(RULE_SET_KEYS))
            if unknown:
                raise ValueError(
                    f"curate.rule_sets.{name}: {unknown} cannot be set per source; "
                    f"allowed: {list(RULE_SET_KEYS)}"
                )
            self.for_rule_set(name)  # range checks, with the key named
        missing = sorted(set(self.source_rule_set.values()) - set(self.rule_sets) - {"default"})
        if missing:
            raise ValueError(
                f"curate.source_rule_set names rule sets {missing} that curate.rule_sets does "
                f"not define (defined: {sorted(self.rule_sets)})"
            )
        return self

    def rule_set_of(self, source: str) -> str:
        return self.source_rule_set.get(source, "default")

    def for_rule_set(self, name: str) -> CurateParams:
        """This section with the rule set's overrides applied (validated)."""
        if name == "default":
            return self
        base = self.model_dump(exclude={"rule_sets", "source_rule_set"})
        try:
            return CurateParams.model_validate({**base, **self.rule_sets[name]})
        except ValidationError as err:
            raise ValueError(f"curate.rule_sets.{name}: {_describe(err)}") from None


class MixParams(_Section):
    """The training mixture (LLaMA recipe): a share of the tokens per group, by up- or
    down-sampling documents; a group above `max_epochs` repetitions is an error."""

    by: Literal["source", "language"] = "source"
    # Requested share per group (normalised to sum 1); {} keeps the corpus proportions.
    weights: dict[str, float] = Field(default_factory=dict)
    max_epochs: float = Field(default=4.0, ge=1)

    @model_validator(mode="after")
    def _positive_weights(self) -> MixParams:
        bad = {k: v for k, v in self.weights.items() if v <= 0}
        if bad:
            raise ValueError(f"mix.weights must be > 0 (drop a group by filtering it): {bad}")
        return self


class ValidatePackedParams(_Section):
    min_train_tokens: int = Field(default=1, ge=1)
    max_train_tokens: int | None = Field(default=None, ge=1)
    # Largest |realised − requested| token share per mixture group.
    max_share_error: float = Field(default=0.1, gt=0, le=1)


class TokenizerParams(_Section):
    vocab_size: int = Field(ge=300, le=1_000_000)
    min_frequency: int = Field(ge=1)


class PackParams(_Section):
    seq_len: int = Field(ge=8)
    val_fraction: float = Field(gt=0, lt=0.5)


# `model.init` value that builds the model from `model:` instead of loading a checkpoint.
SCRATCH = "scratch"
# The `model:` keys a checkpoint's config fixes (same names as transformers' Llama config).
SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rope_theta",
    "max_position_embeddings",
    "tie_word_embeddings",
)


class ModelParams(_Section):
    """Where the model starts and, from scratch, its shape.

    `init`: `scratch` (pretraining builds the model from the keys below) or a pretrained
    checkpoint: a local Hugging Face directory, a GGUF file, a hub id, or a registry URI
    `models:/<name>/<version>` | `models:/<name>@<alias>` (components/modeling/checkpoint.py).
    With a checkpoint the shape comes from it: a shape key left null takes the checkpoint's
    value, and one that is set must equal it (a contradiction is an error, never an override).
    """

    init: str = Field(default="scratch", min_length=1)
    hidden_size: int | None = Field(default=None, ge=8)
    intermediate_size: int | None = Field(default=None, ge=8)
    num_hidden_layers: int | None = Field(default=None, ge=1)
    num_attention_heads: int | None = Field(default=None, ge=1)
    num_key_value_heads: int | None = Field(default=None, ge=1)
    rope_theta: float | None = Field(default=None, gt=0)
    max_position_embeddings: int | None = Field(default=None, ge=8)
    tie_word_embeddings: bool | None = None  # scratch: true when null
    # "mixtral": every MLP becomes num_experts SwiGLU experts with top-k routing. With a
    # checkpoint of another family (e.g. qwen2) it is not compared: it says what scratch builds.
    architecture: Literal["llama", "mixtral"] = "llama"
    num_experts: int = Field(default=8, ge=2)
    experts_per_token: int = Field(default=2, ge=1)

    @property
    def from_scratch(self) -> bool:
        return self.init == SCRATCH

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelParams:
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"model.experts_per_token ({self.experts_per_token}) must not exceed "
                f"model.num_experts ({self.num_experts})"
            )
        unset = [k for k in SHAPE_KEYS if getattr(self, k) is None and k != "tie_word_embeddings"]
        if self.from_scratch and unset:
            raise ValueError(
                "model.init is scratch, so the shape must be given: set "
                + ", ".join(f"model.{k}" for k in unset)
                + " (or start from a checkpoint with model.init)"
            )
        if unset:
            return self  # filled from the checkpoint, then checked (checkpoint.model_params)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"model.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"model.num_key_value_heads ({self.num_key_value_heads})"
            )
        return self


class ClusterParams(_Section):
    """Where pretraining runs: the ranks the launcher starts and what the planner assumes."""

    nodes: int = Field(ge=1)
    ranks_per_node: int = Field(ge=1)  # GPUs per node; CPU processes on this machine
    hosts: tuple[str, ...] = ()  # node names for the DeepSpeed hostfile (nodes > 1)
    master_port: int = Field(default=29500, ge=1024, le=65535)
    accelerator_memory_gb: float = Field(gt=0)
    cpu_memory_gb: float = Field(gt=0)  # per node
    peak_tflops: float = Field(gt=0)  # per accelerator, dense, training precision
    assumed_mfu: float = Field(gt=0, le=1)  # for the planner's GPU-hour estimate

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    @model_validator(mode="after")
    def _hosts_match_nodes(self) -> ClusterParams:
        if self.hosts and len(self.hosts) != self.nodes:
            raise ValueError(
                f"cluster.hosts lists {len(self.hosts)} hosts but cluster.nodes is {self.nodes}"
            )
        return self


class PretrainParams(_Section):
    # auto: the planner's cheapest stage that fits the cluster at this micro-batch (one rank or
    # small model states: 0, plain data parallelism); a number forces that stage.
    zero_stage: Literal["auto", 0, 1, 2, 3] = "auto"
    # GPU memory savers (on the CPU accelerator offload is a no-op: memory is already host RAM).
    offload: Literal["none", "optimizer", "optimizer_and_params"] = "none"
    activation_checkpointing: bool = False
    # auto: bf16 (fp32 master weights) on GPUs, fp32 on CPU; bf16 runs on the CPU accelerator too.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # ZeRO communication, the same on GPUs and on the CPU accelerator (gloo): overlap the
    # gradient reduce with backward; ZeRO-3 fetches the next layers' weights in buckets of this
    # many elements, keeps parameters smaller than the threshold whole on every rank, and holds
    # at most `max_live_parameters` gathered elements at once (DeepSpeed's defaults).
    overlap_comm: bool = True
    prefetch_bucket_size: int = Field(default=50_000_000, ge=0)
    param_persistence_threshold: int = Field(default=100_000, ge=0)
    max_live_parameters: int = Field(default=1_000_000_000, ge=1)
    # ZeRO-3 keeps a gathered parameter if it is used again within this many elements; a
    # model larger than it (every GPU-sized one) releases and re-fetches (DeepSpeed's default).
    max_reuse_distance: int = Field(default=1_000_000_000, ge=0)
    # Speed switches (GPU-oriented; each runs on CPU as well, where it rarely pays off).
    compile: bool = False  # torch.compile of the model under DeepSpeed (engine.compile)
    # Liger Kernel's fused RMSNorm/SwiGLU/RoPE and fused linear cross-entropy (never builds the
    # (batch, seq, vocab) logits in training); needs `pip install liger-kernel` and a GPU.
    liger_kernel: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    micro_batch_size: int = Field(ge=1)
    grad_accum_steps: int = Field(ge=1)
    # 0 with a checkpoint (model.init): no training, the checkpoint itself is the base version.
    max_steps: int = Field(ge=0)
    lr: float = Field(gt=0)
    min_lr_ratio: float = Field(ge=0, le=1)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0)
    eval_every: int = Field(ge=1)
    eval_batches: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    max_train_sequences: int | None = Field(default=None, ge=1)


class LoraParams(_Section):
    enabled: bool = False
    # QLoRA: the frozen base loaded in 4-bit NF4 (bitsandbytes) under the LoRA adapters.
    qlora: bool = False
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    target_modules: tuple[str, ...]

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> Self:
        if self.qlora and not self.enabled:
            raise ValueError(
                "lora.qlora trains LoRA adapters on a 4-bit base: set lora.enabled: true too"
            )
        return self


class PostTrainParams(_Section):
    """Where the post-training stages (sft, reward, align) run; all three read this section."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when torch sees a GPU
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs, else fp32
    # Data-parallel ranks on this node: > 1 makes the stage re-launch its training step on that
    # many ranks (GPUs; CPU processes on DeepSpeed's CPU accelerator), with pretraining's launcher.
    ranks: int = Field(default=1, ge=1)
    # Several ranks (`ranks` > 1, or a launcher's WORLD_SIZE > 1): DeepSpeed ZeRO through the
    # HF Trainer, the config from the generator pretraining uses; 0: plain data parallelism.
    zero_stage: Literal[0, 1, 2, 3] = 3
    offload: Literal["none", "optimizer", "optimizer_and_params"] = "none"
    overlap_comm: bool = True
    prefetch_bucket_size: int = Field(default=50_000_000, ge=0)
    param_persistence_threshold: int = Field(default=100_000, ge=0)
    max_live_parameters: int = Field(default=1_000_000_000, ge=1)
    # ZeRO-3 keeps a gathered parameter if it is used again within this many elements; a
    # model larger than it (every GPU-sized one) releases and re-fetches (DeepSpeed's default).
    max_reuse_distance: int = Field(default=1_000_000_000, ge=0)
    gradient_checkpointing: bool = False  # recompute activations in backward (long sequences)


class SftParams(_Section):
    epochs: float = Field(gt=0)
    lr: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    max_length: int = Field(ge=8)
    max_examples: int | None = Field(default=None, ge=1)
    lora: LoraParams


class RewardParams(_Section):
    epochs: float = Field(gt=0)
    lr: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    max_length: int = Field(ge=8)
    max_examples: int | None = Field(default=None, ge=1)


# Offline preference methods: DPO and the DPOTrainer `loss_type` variants of TRL's stable API
# (ipo: IPO, hinge: SLiC, robust: rDPO, apo_zero: APO-zero), and KTO (its own trainer, on the
# pairs unpaired into desirable/undesirable completions).
PreferenceMethod = Literal["dpo", "ipo", "hinge", "robust", "apo_zero", "kto"]
# On-policy RL from the SFT model: TRL's GRPOTrainer and RLOOTrainer.
RlMethod = Literal["grpo", "rloo"]


class RlParams(_Section):
    """On-policy RL (`align.method: grpo | rloo`); `align.beta` weighs the KL to the SFT model."""

    # Reward name -> weight: `correct`, `exact` (components/training/rl_rewards.py) or
    # `reward_model` (the reward stage's model). Weight 0 leaves a reward out.
    rewards: dict[str, float] = Field(min_length=1)
    num_generations: int = Field(ge=2)  # completions per prompt (the group); divides batch_size
    max_completion_length: int = Field(ge=1)
    temperature: float = Field(gt=0)
    use_vllm: Literal["auto", "on", "off"] = "auto"  # auto: vLLM colocated when on a GPU
    eval_max_prompts: int | None = Field(default=None, ge=1)  # held-out prompts before/after


class AlignParams(_Section):
    method: PreferenceMethod | RlMethod = "dpo"
    # Further offline methods trained from the same SFT model and scored on the same held-out
    # pairs, for the comparison table in align's metrics; only `method` is saved and registered.
    compare: tuple[PreferenceMethod, ...] = ()
    beta: float = Field(gt=0)
    epochs: float = Field(gt=0)
    lr: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    max_length: int = Field(ge=8)
    max_examples: int | None = Field(default=None, ge=1)
    rl: RlParams
    # LoRA / QLoRA on the SFT model for every method (the reference is then the adapter-free
    # model, so no second copy is loaded); registered as adapter + merged versions.
    lora: LoraParams

    @model_validator(mode="after")
    def _rl_batches_whole_groups(self) -> Self:
        if self.method in ("grpo", "rloo") and self.batch_size % self.rl.num_generations:
            raise ValueError(
                f"align.batch_size ({self.batch_size}) must be a multiple of "
                f"align.rl.num_generations ({self.rl.num_generations}): a batch holds whole groups"
            )
        return self


# Weight bits of each llm-compressor preset scheme the quantize stage offers: the ones vLLM's
# CPU backend serves (W8A16 has no CPU kernel; FP8 and W4A8 serve but slower than fp32).
QUANT_SCHEME_BITS: dict[str, int] = {"W8A8": 8, "W4A16": 4}
# Group sizes vLLM's W4A16 kernels take.
QUANT_GROUP_SIZES = (32, 64, 128)


class QuantizeVariant(_Section):
    """One compressed-tensors checkpoint (components/training/quantize.py).

    `scheme`: llm-compressor preset. W8A8: int8 weights (one scale per output channel) and int8
    activations (one dynamic scale per token). W4A16: int4 weights in groups of `group_size`
    input columns (one scale per group), activations in the serving dtype.
    `algorithm`: gptq (calibrated: rounds each weight column to cancel the error of the columns
    before it, on the calibration passages) | rtn (round to nearest, no calibration).
    """

    scheme: Literal["W8A8", "W4A16"]
    # W4A16 only. auto: the largest of QUANT_GROUP_SIZES that divides every quantized layer's
    # in_features (a checkpoint's dims, e.g. 576, need not be multiples of 128).
    group_size: int | Literal["auto"] | None = None
    algorithm: Literal["gptq", "rtn"] = "gptq"

    @model_validator(mode="after")
    def _group_size_matches_scheme(self) -> Self:
        grouped = self.scheme == "W4A16"
        if grouped and self.group_size not in (*QUANT_GROUP_SIZES, "auto"):
            raise ValueError(
                f"{self.scheme} needs group_size auto or in {QUANT_GROUP_SIZES} (the group "
                f"sizes vLLM's kernels take); got {self.group_size}"
            )
        if not grouped and self.group_size is not None:
            raise ValueError(f"{self.scheme} has one scale per output channel: drop group_size")
        return self


class QuantizeVariants(_Section):
    """The quantized variants of the policy; each is a DVC output and a registered model."""

    int8: QuantizeVariant = QuantizeVariant(scheme="W8A8")
    int4: QuantizeVariant = QuantizeVariant(scheme="W4A16", group_size=128)

    @model_validator(mode="after")
    def _bits_match_name(self) -> Self:
        for name, bits in (("int8", 8), ("int4", 4)):
            scheme = getattr(self, name).scheme
            if QUANT_SCHEME_BITS[scheme] != bits:
                raise ValueError(
                    f"quantize.variants.{name} must use a {bits}-bit weight scheme "
                    f"(its registered name says so); {scheme} has "
                    f"{QUANT_SCHEME_BITS[scheme]}-bit weights"
                )
        return self


class QuantizeParams(_Section):
    # Rows of the packed training array the calibrated (gptq) variants see, drawn with the seed.
    calibration_samples: int = Field(default=64, ge=1)
    # Held-out validation rows on which each variant is compared with the fp policy.
    compare_rows: int = Field(default=64, ge=1)
    variants: QuantizeVariants = QuantizeVariants()


class EvaluateParams(_Section):
    max_new_tokens: int = Field(ge=1)
    max_examples: int = Field(ge=1)  # also lm-eval's per-task limit for lm_eval_tasks
    # More lm-evaluation-harness tasks run on every model besides the bundled `llmops` group:
    # registered names (e.g. "hellaswag", needs its data in the HF cache) or task YAML paths.
    lm_eval_tasks: tuple[str, ...] = ()
    ppl_batches: int = Field(ge=1)
    ppl_batch_size: int = Field(default=8, ge=1)
    generation_batch_size: int = Field(default=16, ge=1)


class JudgeCalibrationParams(_Section):
    """What a judge must show before its verdicts count (components/evaluation/calibration.py):
    below any threshold, on the calibration pairs or on the comparison itself, the judge is
    unavailable and its gate's `if_missing` decides."""

    pairs: int = Field(default=16, ge=2)  # eval items: correct vs wrong answer, both orders
    min_accuracy: float = Field(default=0.75, ge=0, le=1)  # correct answer picked in both orders
    min_consistency: float = Field(default=0.75, ge=0, le=1)  # same verdict in both orders
    max_invalid_rate: float = Field(default=0.1, ge=0, le=1)  # replies that are no verdict


class JudgeParams(_Section):
    """Pairwise judge of the challenger against the champion (components/evaluation/pairwise).

    `endpoint` None: the trained reward model scores each answer (offline, deterministic).
    Otherwise an OpenAI-compatible chat endpoint (vLLM, OpenAI, ...) is asked which answer is
    better; if it cannot be reached, answers no verdict or fails its calibration, the judge
    metrics are missing and the gate's `if_missing` decides.
    """

    endpoint: str | None = None  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""  # the endpoint's model name (required with an endpoint)
    api_key_env: str = "LLMOPS_JUDGE_API_KEY"  # env var holding the key; unset: "EMPTY"
    timeout_s: float = Field(default=30.0, gt=0)
    max_prompts: int = Field(default=48, ge=1)
    max_new_tokens: int = Field(default=32, ge=1)  # of each answer being judged
    batch_size: int = Field(default=16, ge=1)
    reward_max_length: int = Field(default=256, ge=8)  # tokens the reward model reads
    confidence: float = Field(default=0.95, gt=0, lt=1)  # of the win-rate interval
    bootstrap_resamples: int = Field(default=2000, ge=100)
    calibration: JudgeCalibrationParams = JudgeCalibrationParams()
    # Whether the endpoint's model was trained on this pipeline's preference pairs (e.g. it
    # serves the reward model or a policy): such a judge shares training signal with the
    # challenger and its verdict is flagged, never enough on its own. The reward-model judge
    # always is.
    endpoint_shares_training: bool = False
    # `init`: the stage serves the model.init checkpoint with vLLM for its own run (settings from
    # `deploy:`, this port and context) and asks it through the endpoint path: an instruct model
    # that shares no training signal with the challenger. null: `endpoint`, else the reward model.
    serve: Literal["init"] | None = None
    serve_port: int = Field(default=8767, ge=1024, le=65535)
    serve_max_model_len: int = Field(default=2048, ge=256)  # the prompt and both answers
    # Ask a vLLM endpoint for exactly one of A / B / tie (structured outputs, a choice
    # constraint), so that a small model's reply is always a verdict; what it is worth is still
    # for the calibration to show. Always on for `serve`.
    constrained: bool = False

    @model_validator(mode="after")
    def _endpoint_needs_model(self) -> JudgeParams:
        if self.endpoint and not self.model:
            raise ValueError("judge.endpoint needs judge.model (the served model's name)")
        if self.endpoint and self.serve:
            raise ValueError(
                "judge.endpoint and judge.serve both set: the judge is either an endpoint you "
                "run or the one the stage serves; set one of them to null"
            )
        return self


class SafetyParams(_Section):
    """Toxicity and regurgitation of the challenger's answers to adversarial prompts
    (components/evaluation/safety.py)."""

    max_new_tokens: int = Field(default=48, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # An answer counts as toxic at this classifier probability (as curate.toxic_line_threshold
    # for a line of a document).
    toxic_threshold: float = Field(default=0.8, gt=0, le=1)
    # An answer regurgitates if it shares a run of this many normalised words with a training
    # document (GPT-3's decontamination n-gram is 13).
    regurgitation_ngram: int = Field(default=12, ge=4)


class ReportParams(_Section):
    """The per-run evaluation report and its contamination table (components/evaluation/report)."""

    contamination_ngram: int = Field(default=13, ge=3)
    # Items with fewer words are matched whole, and those under this count not at all (as
    # curate.decontam_min_words).
    contamination_min_words: int = Field(default=8, ge=1)


class ReproduceParams(_Section):
    """How `llmops reproduce` judges a rebuilt model (flows/reproduce.py). The weights must hash
    the same; each metric of the producing run must match within `rtol`/`atol` (math.isclose).
    0/0 asks for bit-identical numbers: what the CPU demo gives. On GPUs, kernels that sum in a
    nondeterministic order (atomics in attention and reduction backward passes, NCCL all-reduce
    across ranks) change the last bits of every step, so weights differ and losses agree only to
    about 1e-3 relative: set `rtol` there (README, "Reproducing a model")."""

    rtol: float = Field(default=0.0, ge=0.0)
    atol: float = Field(default=0.0, ge=0.0)
    # Metrics that measure the machine, not the model (wall time, throughput, utilisation):
    # never compared. fnmatch patterns.
    ignore_metrics: tuple[str, ...] = (
        "*_s",
        "*_s_mean",
        "*per_s*",
        "*seconds*",
        "*runtime*",
        "mfu*",
        "*_mfu",
    )


class GateRule(_Section):
    """One condition the challenger must meet to take `champion` (components/registry/promote).

    `against: absolute`: the challenger's value must be >= `threshold` (better: higher) or
    <= `threshold` (better: lower). `against: champion`: it must beat the champion's recorded
    value by MORE than `threshold` (default `promote.min_delta`); so a tie never passes unless
    the margin is negative, i.e. a tolerated regression written down on purpose.
    """

    metric: str | None = Field(
        default=None, min_length=1
    )  # key of metrics/evaluate.json; None: the gate's name
    better: Literal["higher", "lower"]
    against: Literal["absolute", "champion"]
    threshold: float | None = None
    # A metric the evaluation did not produce (judge endpoint down, stage switched off) never
    # passes: `fail` blocks promotion, `skip` leaves this gate out of the decision (reported).
    if_missing: Literal["fail", "skip"] = "fail"
    # `against: champion` only. point: the challenger's value vs the champion's. mcnemar: a
    # paired exact test on the per-item results of both (promote.confidence); a tie or an
    # insignificant gain fails.
    test: Literal["point", "mcnemar"] = "point"
    # `against: absolute` only: the key compared with the threshold instead of the metric,
    # e.g. its interval's bound (`judge_win_rate_ci_high`: the challenger is not shown to lose).
    bound: str | None = Field(default=None, min_length=1)
    # A key (1/0) saying whether this gate's evidence is independent of the challenger's
    # training (`judge_independent`). At 0 a pass is not evidence: the gate is reported
    # skipped, while a fail still fails.
    independence: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _absolute_needs_threshold(self) -> GateRule:
        if self.against == "absolute" and self.threshold is None:
            raise ValueError("a gate with `against: absolute` needs a `threshold`")
        if self.test != "point" and self.against != "champion":
            raise ValueError(f"`test: {self.test}` compares with the champion: `against: champion`")
        if self.bound is not None and self.against != "absolute":
            raise ValueError("`bound` replaces the value of an `against: absolute` gate")
        return self


def min_paired_items(confidence: float) -> int:
    """The fewest paired items on which a one-sided exact McNemar test can reject "no
    difference" at `confidence`: every item discordant and in the same direction gives
    p = 0.5**n, so n must exceed log2(1 / (1 - confidence))."""
    return math.floor(math.log2(1.0 / (1.0 - confidence))) + 1


class PromoteParams(_Section):
    # Default margin of `against: champion` gates: the challenger must beat the champion by
    # more than this (0: strictly better; a tie keeps the champion).
    min_delta: float = 0.0
    # Of the paired tests (`test: mcnemar`) and of reading an interval's direction.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    gates: dict[str, GateRule] = Field(min_length=1)
    # When task accuracy (a `test: mcnemar` gate) and the judge (`disagreement_judge`'s interval)
    # point opposite ways, each beyond its interval: keep_champion, or let one of them decide
    # (the other's gate is then reported skipped). `judge` needs an independent judge.
    on_disagreement: Literal["keep_champion", "accuracy", "judge"] = "keep_champion"
    disagreement_judge: str = "judge_win_rate"  # gate whose metric has <metric>_ci_low/_ci_high

    @model_validator(mode="after")
    def _disagreement_judge_is_a_gate(self) -> PromoteParams:
        if self.on_disagreement != "keep_champion" and self.disagreement_judge not in self.gates:
            raise ValueError(
                f"promote.disagreement_judge {self.disagreement_judge!r} is not a gate; "
                f"gates: {sorted(self.gates)}"
            )
        return self

    def rules(self) -> dict[str, tuple[str, GateRule]]:
        """{gate name: (metric key, rule)}, the metric defaulting to the gate's name."""
        return {name: (rule.metric or name, rule) for name, rule in self.gates.items()}


class CanaryWeights(_Section):
    """Shares of the gateway's traffic, in percent; they add up to 100."""

    champion: int = Field(default=90, ge=0, le=100)
    challenger: int = Field(default=10, ge=0, le=100)

    @model_validator(mode="after")
    def _add_up_to_100(self) -> CanaryWeights:
        if self.champion + self.challenger != 100:
            raise ValueError(
                f"deploy.canary.weights add up to {self.champion + self.challenger}, not 100"
            )
        return self


class CanaryParams(_Section):
    """Progressive delivery (components/serving/canary.py): the registry's `challenger` serves
    `weights.challenger`% of the traffic beside the `champion` behind a LiteLLM gateway for a
    bounded window; its live numbers decide with the promotion gates' rules
    (`gates()`: no worse than the champion beyond each margin)."""

    enabled: bool = False  # `llmops serve` serves as a canary (as with --canary)
    weights: CanaryWeights = CanaryWeights()
    # The window ends at whichever comes first.
    window_requests: int = Field(default=200, ge=1)
    window_minutes: float = Field(default=10.0, gt=0)
    # Fewer challenger requests than this in the window: no decision (the canary fails).
    min_challenger_requests: int = Field(default=10, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)  # challenger, absolute
    # Tolerated regressions against the champion's live numbers (> 0: a tie passes).
    error_rate_margin: float = Field(default=0.02, ge=0, le=1)
    latency_p95_margin_s: float = Field(default=0.5, ge=0)
    accuracy_margin: float = Field(default=0.05, ge=0, le=1)
    gateway_port: int = Field(default=8770, ge=1024, le=65535)
    challenger_port: int = Field(default=8766, ge=1024, le=65535)
    startup_timeout_s: int = Field(default=120, ge=5)  # the gateway's
    # The cluster form (components/serving/httproute.py): the Gateway API Gateway the
    # HTTPRoute attaches to.
    k8s_gateway: str = Field(default="llmops-gateway", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

    def gates(self) -> dict[str, GateRule]:
        """The canary's gates in the promotion gates' schema (components/registry/gates.py
        `check_gate`); a negative threshold against the champion is a tolerated regression."""
        return {
            "error_rate": GateRule(
                better="lower", against="absolute", threshold=self.max_error_rate
            ),
            "error_rate_vs_champion": GateRule(
                metric="error_rate", better="lower", against="champion",
                threshold=-self.error_rate_margin,
            ),
            "latency_p95_s": GateRule(
                better="lower", against="champion", threshold=-self.latency_p95_margin_s
            ),
            "accuracy": GateRule(
                better="higher", against="champion", threshold=-self.accuracy_margin,
                if_missing="skip",
            ),
        }  # fmt: skip


class DeployParams(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CPU when no GPU driver tools
    cpu_kv_cache_mib: int = Field(default=256, ge=16)  # vLLM's CPU backend needs it explicit
    port: int = Field(ge=1024, le=65535)
    # auto: bfloat16 on GPUs, float32 on CPU (bfloat16 crashed vLLM's CPU backend, head size 32)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    tensor_parallel_size: int = Field(default=1, ge=1)  # GPUs one server shards the model over
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)  # weights + KV cache share
    max_model_len: int = Field(ge=16)
    startup_timeout_s: int = Field(ge=10)
    n_requests: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    # Which registered form of the champion is served: the fp policy itself, or the version of
    # llmops-policy-int8 / -int4 quantized from it (tag parent_model = llmops-policy/<version>).
    variant: Literal["fp", "int8", "int4"] = "fp"
    # The API key vLLM requires on /v1/* (401 without it): read from this environment variable,
    # or from api_key_file (a secret mounted as a file; it wins). With neither set, `llmops
    # serve` refuses to start unless require_api_key is false; the deploy stage's own short-lived
    # server gets a random one-time key.
    api_key_env: str | None = "LLMOPS_API_KEY"
    api_key_file: str | None = None
    require_api_key: bool = True
    # LoRA adapters served beside the base model: {served name: registry URI of a PEFT
    # adapter directory}, e.g. {"support": "models:/llmops-lora/3"}; requests pick one by name.
    adapters: dict[str, str] = {}
    max_lora_rank: int = Field(default=16, ge=1)
    # Lets /v1/load_lora_adapter and /v1/unload_lora_adapter add adapters to a running server
    # (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING; guarded by the API key like all of /v1).
    runtime_lora: bool = False
    # lm-evaluation-harness against the live endpoint (local-completions backend): the bundled
    # task families to run (empty: none), at most eval_limit examples each.
    eval_tasks: tuple[str, ...] = ()
    eval_limit: int = Field(default=20, ge=1)
    canary: CanaryParams = CanaryParams()

    @model_validator(mode="after")
    def _canary_ports_differ(self) -> DeployParams:
        ports = [self.port, self.canary.challenger_port, self.canary.gateway_port]
        if len(set(ports)) != 3:
            raise ValueError(
                f"deploy.port, deploy.canary.challenger_port and deploy.canary.gateway_port "
                f"must differ; they are {ports}"
            )
        return self


# Scale profiles (params.yaml `profiles:`); smollm2 starts from a real pretrained checkpoint.
Profile = Literal["smoke", "demo", "cluster", "smollm2"]


class Params(_Section):
    profile: Profile = "demo"
    seed: int = 0
    tasks: TasksParams = TasksParams()
    ingest: IngestParams
    validate_raw: ValidateRawParams
    curate: CurateParams
    mix: MixParams
    tokenizer: TokenizerParams
    pack: PackParams
    validate_packed: ValidatePackedParams
    model: ModelParams
    cluster: ClusterParams
    pretrain: PretrainParams
    posttrain: PostTrainParams = PostTrainParams()
    sft: SftParams
    reward: RewardParams
    align: AlignParams
    quantize: QuantizeParams
    evaluate: EvaluateParams
    judge: JudgeParams = JudgeParams()
    safety: SafetyParams = SafetyParams()
    report: ReportParams = ReportParams()
    reproduce: ReproduceParams = ReproduceParams()
    promote: PromoteParams
    deploy: DeployParams
    # Scale overlays (partial Params); validated when applied, see flows/params_overlay.py.
    profiles: dict[Profile, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _zero_steps_needs_checkpoint(self) -> Params:
        if self.pretrain.max_steps == 0 and self.model.from_scratch:
            raise ValueError(
                "pretrain.max_steps is 0 (register the checkpoint as the base) but model.init is "
                "scratch: there is no checkpoint; set model.init or pretrain.max_steps >= 1"
            )
        return self

    @model_validator(mode="after")
    def _served_judge_needs_checkpoint(self) -> Params:
        if self.judge.serve == "init" and self.model.from_scratch:
            raise ValueError(
                "judge.serve is 'init' but model.init is scratch: there is no instruct "
                "checkpoint to serve as the judge; set model.init or judge.serve: null"
            )
        return self

    @model_validator(mode="after")
    def _eval_set_fits_the_paired_test(self) -> Params:
        paired = [n for n, r in self.promote.gates.items() if r.test != "point"]
        items = min(self.tasks.eval, self.evaluate.max_examples)
        need = min_paired_items(self.promote.confidence)
        if paired and items < need:
            raise ValueError(
                f"the eval set may give as few as {items} items (min of tasks.eval, "
                f"evaluate.max_examples), but the paired test of gates {paired} cannot show a "
                f"gain at promote.confidence {self.promote.confidence:g} on fewer than {need}: "
                "raise both, or lower the confidence"
            )
        return self

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> Params:
        if self.pretrain.offload == "optimizer_and_params" and self.pretrain.zero_stage not in (
            3,
            "auto",
        ):
            raise ValueError("pretrain.offload 'optimizer_and_params' needs pretrain.zero_stage 3")
        return self


class StageParams(BaseModel):
    """What one stage reads: a subclass lists the top-level sections of `Params` it needs,
    with the same names and types, e.g. `class Reads(StageParams): seed: int; curate: ...`.

    The stage gets only that frozen view (`narrow`), so reading an undeclared section fails;
    `dvc.yaml`'s `params:` are generated from the same fields (`llmops dag`), and the lineage
    tag `params_hash` covers only them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            declared = Params.model_fields.get(name)
            if declared is None or declared.annotation != field.annotation:
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__}.{name}: not a section of params.yaml "
                    f"with that type; sections: {', '.join(Params.model_fields)}"
                )

    def __getattr__(self, name: str) -> Any:
        if name in Params.model_fields:
            raise AttributeError(
                f"{type(self).__module__} reads params section {name!r} without declaring it: "
                f"add `{name}` to its {type(self).__qualname__} (then run `llmops dag --write`)"
            )
        return super().__getattr__(name)

    @classmethod
    def sections(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def narrow(cls, params: Params) -> Self:
        return cls.model_validate({name: getattr(params, name) for name in cls.sections()})


class ParamsError(ValueError):
    """params.yaml (or an override) does not match the schema."""


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if not e["loc"]:  # a rule across sections: its message names the keys
            lines.append(f"  {e['msg']}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check spelling; allowed keys are in params.yaml)")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"invalid {source}:\n{_describe(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project root or pass --params")
    return parse_params(yaml.safe_load(path.read_text()) or {}, source=str(path))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested params (`curate.near_dedup.bands`), as MLflow params and
    `--set` overrides spell them. An empty mapping is a value (`mix.weights: {}`), not nothing."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def params_hash(params: BaseModel) -> str:
    """Stable short hash of the parameters a stage read (a lineage tag on every model)."""
    blob = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
