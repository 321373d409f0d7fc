"""One rank of DeepSpeed pretraining. Launched by the pretrain stage through the DeepSpeed launcher.

Reads top to bottom: setup (distributed, model under ZeRO-3 init, engine) → resume → train loop
(with validation and checkpoints) → consolidate to Hugging Face safetensors on rank 0.

Determinism, so a killed run resumes to the same result: the batch of step s and the RNG seed of
step s are pure functions of (seed, s, rank); a checkpoint only has to remember s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.integrations import HfDeepSpeedConfig

from components.config import (
    ClusterParams,
    ModelParams,
    PackParams,
    PretrainParams,
    StageParams,
    TokenizerParams,
    load_params,
)
from components.modeling import checkpoint
from components.modeling.llama import llama_config
from components.training.accelerator import (
    all_gather,
    all_reduce,
    logit_difference,
    resolve_precision,
)
from components.training.checkpoints import (
    fingerprint,
    prepare_checkpoints,
    prune_checkpoints,
    resume_step,
)
from components.training.ds_config import optimizer_kwargs
from components.training.planner import count_parameters, flops_per_token
from components.training.sizing import model_shape
from components.training.step_metrics import StepMetrics

log = logging.getLogger("pretrain")
PARTITION_FILE = "partition.json"  # how the parameters were split across ranks
CONSOLIDATION_FILE = "consolidation.json"  # saved safetensors vs the live sharded model
MEMORY_FILE = "model_state_memory.json"  # measured ZeRO-3 model-state bytes per rank
SETTINGS_FILE = "run_settings.json"  # what this run actually used (precision, optimizer, ...)


class Reads(StageParams):
    """What the pretrain stage and its ranks read (the stage re-exports it as its `Reads`).
    `tokenizer` and `pack` size the planner's token budget; the vocabulary itself comes from the
    trained tokenizer."""

    seed: int
    tokenizer: TokenizerParams
    pack: PackParams
    model: ModelParams
    cluster: ClusterParams
    pretrain: PretrainParams


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DeepSpeed pretraining worker (one rank)")
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="packed directory")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--init", type=Path, help="checkpoint stage output (models/init)")
    p.add_argument("--ds-config", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="consolidated HF model directory")
    p.add_argument("--history", type=Path, required=True, help="per-step metrics JSONL")
    p.add_argument("--mlflow-run-id", default="")
    p.add_argument("--local_rank", type=int, default=-1)  # set by the DeepSpeed launcher
    return p.parse_args(argv)


def global_batch_indices(step: int, global_batch: int, n: int, seed: int) -> np.ndarray:
    """Sequence indices of the global batch of `step`: epochs of seeded permutations."""
    positions = np.arange(step * global_batch, (step + 1) * global_batch)
    epochs, pos = np.divmod(positions, n)
    idx = np.empty(global_batch, dtype=np.int64)
    for epoch in np.unique(epochs):
        mask = epochs == epoch
        idx[mask] = np.random.default_rng(seed + int(epoch)).permutation(n)[pos[mask]]
    return idx


def rank_slice(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    per_rank = len(indices) // world
    return indices[rank * per_rank : (rank + 1) * per_rank]


@torch.no_grad()
def validation_loss(
    engine, val: np.ndarray, micro: int, batches: int, rank: int, world: int, device: torch.device
) -> float:
    engine.eval()
    total = torch.zeros(2, device=device)  # (sum of losses, count)
    for b in range(batches):
        start = (b * world + rank) * micro
        if start + micro > len(val):
            break
        x = torch.as_tensor(val[start : start + micro].astype(np.int64), device=device)
        total += torch.stack(
            [engine(input_ids=x, labels=x).loss.float(), torch.ones((), device=device)]
        )
    # Every rank must run the same number of forwards under ZeRO-3 (parameter all-gathers).
    all_reduce(total)
    release_prefetched(engine)
    engine.train()
    return (total[0] / total[1].clamp(min=1)).item()


def release_prefetched(engine) -> None:
    """Re-partition every ZeRO-3 parameter after forward-only passes.

    Without a backward, the prefetcher may leave the next layers' all-gathers in flight; a
    later `GatheredParameters` (consolidation) then fails with "Cannot partition a param in
    flight". A no-op for ZeRO stages 0-2 (their optimizers have no partition cache)."""
    engine.empty_partition_cache()


def consolidate(engine, model, tokenizer, out: Path, rank: int, probe: torch.Tensor) -> None:
    """Gather the ZeRO-3 shards, write HF safetensors on rank 0 in the training dtype, and check
    the written model gives the live sharded model's logits on `probe` (batch, seq): both
    forwards in the same dtype on the same device, within that dtype's tolerance."""
    engine.eval()
    release_prefetched(engine)
    params = list(model.parameters())
    dtype = params[0].dtype  # bf16 under DeepSpeed's bf16 mode, else fp32
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank == 0:
            state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    with torch.no_grad():
        live = engine(input_ids=probe).logits  # every rank: ZeRO-3 all-gathers; (b, s, vocab)
    release_prefetched(engine)
    if rank == 0:
        save_consolidated(model.config, state, dtype, tokenizer, out)
        check_consolidated(out, probe, live)
    dist.barrier()


def save_consolidated(config, state: dict, dtype: torch.dtype, tokenizer, out: Path) -> None:
    full = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = full.load_state_dict(state, strict=False)
    # Tied embeddings show up as a missing lm_head; anything else is a real mismatch.
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"consolidation mismatch: missing={missing} unexpected={unexpected}")
    out.mkdir(parents=True, exist_ok=True)
    full.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def check_consolidated(out: Path, probe: torch.Tensor, live: torch.Tensor) -> None:
    """Reload `out` like a user would, in the live logits' dtype and on their device."""
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=live.dtype).to(live.device).eval()
    with torch.no_grad():
        again = reloaded(input_ids=probe).logits
    diff, tolerance = logit_difference(live, again)
    del reloaded  # free its accelerator memory before the ranks exit
    record = {
        "max_rel_logit_diff": diff,
        "tolerance": tolerance,
        "dtype": str(live.dtype).removeprefix("torch."),
        "device": live.device.type,
    }
    (out / CONSOLIDATION_FILE).write_text(json.dumps(record))
    if diff > tolerance:
        raise RuntimeError(
            f"consolidated model differs from the trained one: max |logit difference| "
            f"{diff:.2e} (relative to the largest logit) > {tolerance} for {live.dtype}"
        )
    log.info("consolidated %s; max relative |logit difference| vs live model %.2e", out, diff)


def partition_report(model, rank: int, world: int, device: torch.device) -> dict | None:
    """Elements of every parameter this rank holds (ZeRO-3 keeps a 1/world shard of each)."""
    local = torch.tensor(
        [getattr(p, "ds_tensor", p).numel() for p in model.parameters()],
        dtype=torch.int64,
        device=device,  # collectives run on the accelerator: NCCL has no CPU tensors
    )
    full = [getattr(p, "ds_numel", p.numel()) for p in model.parameters()]
    gathered = [torch.zeros_like(local) for _ in range(world)]
    all_gather(gathered, local)
    if rank:
        return None
    names = [n for n, _ in model.named_parameters()]
    return {
        "world_size": world,
        "total_elements": sum(full),
        "per_rank_elements": [int(g.sum()) for g in gathered],
        "parameters": {
            n: {"full": f, "per_rank": [int(g[i]) for g in gathered]}
            for i, (n, f) in enumerate(zip(names, full, strict=True))
        },
    }


def zero_stage_of(ds_config: dict) -> int:
    """The ZeRO stage this run uses: the stage resolved `pretrain.zero_stage` (auto) into."""
    return ds_config["zero_optimization"]["stage"]


def build_model(
    params: Reads, tokenizer, ds_config: dict, init: Path | None = None
) -> torch.nn.Module:
    """The model, from `model:` or the checkpoint in `init`; under ZeRO-3 each rank allocates
    (and, from a checkpoint, loads) only its shard."""
    torch.manual_seed(params.seed)  # identical init on every rank before partitioning
    # While `hf_ds` lives, transformers builds the model under deepspeed.zero.Init and
    # initialises weights with the shards gathered. It must not outlive this function: later
    # from_config/from_pretrained calls on rank 0 alone would wait for the other ranks forever.
    cfg = params.pretrain
    zero3 = zero_stage_of(ds_config) == 3
    hf_ds = HfDeepSpeedConfig(ds_config) if zero3 else None
    scratch = init is None or checkpoint.is_scratch(init)
    config = llama_config(params.model, tokenizer) if scratch else AutoConfig.from_pretrained(init)
    if cfg.liger_kernel:
        apply_liger_kernel(config.model_type)  # patches the classes: before the model exists
    if scratch:
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation=cfg.attn_implementation
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(
            init, dtype=torch.float32, attn_implementation=cfg.attn_implementation
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            # The tokenizer stage added ChatML's tokens to a checkpoint without a chat template.
            model.resize_token_embeddings(len(tokenizer))
    del hf_ds
    if cfg.liger_kernel and zero3:
        # Liger's fused linear cross-entropy reads lm_head.weight inside the model's forward
        # without calling lm_head: ZeRO-3 must gather it for the whole model's forward.
        deepspeed.zero.register_external_parameter(model, model.get_output_embeddings().weight)
    if params.pretrain.activation_checkpointing:
        # Keep only each layer's input; recompute the rest in backward (~1/3 more compute).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if params.model.architecture == "mixtral":
        # Ranks route tokens to different experts; ZeRO-3 must gather the whole MoE block as
        # one unit or the ranks' parameter all-gathers diverge and hang.
        from deepspeed.utils import set_z3_leaf_modules
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

        set_z3_leaf_modules(model, [MixtralSparseMoeBlock])
    return model


def apply_liger_kernel(model_type: str) -> None:
    """Liger Kernel's Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy)."""
    try:
        import liger_kernel.transformers as liger
    except ImportError as err:
        raise RuntimeError(
            f"pretrain.liger_kernel is true but Liger Kernel does not import ({err}): "
            "`pip install -e .[gpu]` on a CUDA machine, or set pretrain.liger_kernel: false"
        ) from err
    apply = {
        "llama": liger.apply_liger_kernel_to_llama,
        "mixtral": liger.apply_liger_kernel_to_mixtral,
    }[model_type]
    apply(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True)
    log.info(
        "Liger Kernel applied to %s (fused linear cross-entropy, RMSNorm, SwiGLU, RoPE)", model_type
    )


def load_fused_adam(offload_optimizer: bool) -> None:
    """Build (JIT, cached) the op DeepSpeed's AdamW will use; raises what the build raises."""
    from deepspeed.accelerator import get_accelerator

    name = "CPUAdamBuilder" if offload_optimizer else "FusedAdamBuilder"
    get_accelerator().create_op_builder(name).load()


def client_optimizer(
    ds_config: dict,
    model: torch.nn.Module,
    cfg: PretrainParams,
    device: torch.device,
    load_op: Callable[[], None] | None = None,
) -> tuple[torch.optim.Optimizer | None, str, dict]:
    """(the optimizer to hand DeepSpeed, its name, the DeepSpeed config to initialise with).
    With an `optimizer` section DeepSpeed builds its own fused AdamW, unless that C++/CUDA build
    fails (no compiler, an arch list it cannot parse such as `9.0a`): then the returned config
    is a copy of `ds_config` without the section and torch's fused AdamW takes over, with the
    reason logged. Without the section (CPU): torch's AdamW. `ds_config` is left as it was."""
    fused = device.type == "cuda"  # torch's fused AdamW: one kernel per step on GPUs
    if "optimizer" in ds_config:
        offload = "offload_optimizer" in ds_config["zero_optimization"]
        try:
            (load_op or (lambda: load_fused_adam(offload)))()
            return None, "deepspeed_" + ("cpu_adam" if offload else "fused_adam"), ds_config
        except Exception as err:  # a JIT build fails in many ways: compiler, headers, arch list
            log.warning(
                "DeepSpeed's fused Adam did not build (%s: %s); using torch.optim.AdamW"
                "(fused=%s) instead",
                type(err).__name__,
                err,
                fused,
            )
            # ZeRO-Offload insists on DeepSpeed's CPU Adam unless told otherwise.
            ds_config = {k: v for k, v in ds_config.items() if k != "optimizer"}
            ds_config["zero_force_ds_cpu_optimizer"] = False
    opt = torch.optim.AdamW(model.parameters(), **optimizer_kwargs(cfg), fused=fused)
    return opt, "torch_adamw" + ("_fused" if fused else ""), ds_config


def write_memory_report(engine, path: Path, rank: int, world: int) -> None:
    """Model-state bytes each rank allocated (ZeRO-3 only), gathered to rank 0."""
    from components.training.zero_memory import zero3_model_state_bytes

    mine = zero3_model_state_bytes(engine)
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        params = list(engine.module.parameters())
        path.write_text(
            json.dumps(
                {
                    "world_size": world,
                    "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in params),
                    "param_bytes_per_element": params[0].element_size(),
                    "per_rank": everyone,
                },
                indent=1,
            )
        )


def train(params: Reads, args: argparse.Namespace, metrics: StepMetrics | None) -> None:
    """Train and consolidate; rank 0 reports each step to `metrics` (None on other ranks)."""
    cfg = params.pretrain
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(deepspeed.get_accelerator().device_name())
    ds_config = json.loads(args.ds_config.read_text())
    zero_stage = zero_stage_of(ds_config)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    model = build_model(params, tokenizer, ds_config, args.init)
    client_opt, optimizer_name, ds_config = client_optimizer(ds_config, model, cfg, device)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=client_opt, model_parameters=model.parameters(), config=ds_config
    )
    if cfg.compile:
        # DeepSpeed compiles the wrapped module and keeps its ZeRO hooks working with it.
        engine.compile()
    settings = {
        "device": device.type,
        "world_size": world,
        "precision": resolve_precision(cfg.precision, device.type),
        "param_dtype": str(next(engine.module.parameters()).dtype).removeprefix("torch."),
        "zero_stage": zero_stage,  # as resolved from pretrain.zero_stage (auto: the planner)
        "zero_stage_requested": cfg.zero_stage,
        "optimizer": optimizer_name,
        "compile": cfg.compile,
        "liger_kernel": cfg.liger_kernel,
        "attn_implementation": engine.module.config._attn_implementation,
    }
    log.info("run settings: %s", settings)

    init_hash = checkpoint.read(args.init).hash if args.init else ""
    setup = fingerprint(params, args.data, init_hash)
    prepare_checkpoints(args.checkpoints, setup, rank, world, args.history)
    if rank == 0:
        (args.checkpoints / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    report = partition_report(engine.module, rank, world, device)
    if report:
        (args.checkpoints / PARTITION_FILE).write_text(json.dumps(report, indent=1))
    start = resume_step(engine, args.checkpoints)

    train_arr = np.load(args.data / "train.npy", mmap_mode="r")
    val_arr = np.load(args.data / "val.npy", mmap_mode="r")
    n_train = (
        len(train_arr)
        if cfg.max_train_sequences is None
        else min(len(train_arr), cfg.max_train_sequences)
    )
    micro, accum = cfg.micro_batch_size, cfg.grad_accum_steps
    global_batch = micro * accum * world
    tokens_per_step = global_batch * train_arr.shape[1]
    # Model FLOPs utilisation: achieved model FLOPs over the ranks' peak (PaLM's definition).
    shape = model_shape(params.model, len(tokenizer))
    peak_flops = params.cluster.peak_tflops * 1e12 * world
    step_flops = (
        flops_per_token(shape, count_parameters(shape).active, train_arr.shape[1]) * tokens_per_step
    )
    progress = tqdm(
        total=cfg.max_steps, initial=start, desc="pretrain", unit="step", disable=rank != 0
    )
    engine.train()
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        torch.manual_seed(params.seed + step * world + rank)
        mine = rank_slice(
            global_batch_indices(step, global_batch, n_train, params.seed), rank, world
        )
        losses = []
        for m in range(accum):
            x = torch.as_tensor(
                train_arr[np.sort(mine[m * micro : (m + 1) * micro])].astype(np.int64),
                device=device,
            )
            loss = engine(input_ids=x, labels=x).loss  # x: (micro, seq_len)
            engine.backward(loss)
            engine.step()  # DeepSpeed applies the update at the accumulation boundary
            losses.append(loss.detach())
        loss_t = torch.stack(losses).mean()
        all_reduce(loss_t)
        deepspeed.get_accelerator().synchronize()  # kernels are async: time what ran
        dt = time.perf_counter() - t0
        values = {
            "train_loss": loss_t.item() / world,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": float(engine.get_global_grad_norm() or 0.0),
            "tokens_per_s": tokens_per_step / dt,
            "samples_per_s": global_batch / dt,
            "mfu": step_flops / dt / peak_flops,
        }
        done = step + 1
        if step == start and zero_stage == 3:  # Adam's moments exist after the first step
            write_memory_report(engine, args.checkpoints / MEMORY_FILE, rank, world)
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            vl = validation_loss(engine, val_arr, micro, cfg.eval_batches, rank, world, device)
            values.update(val_loss=vl, val_perplexity=math.exp(min(vl, 50)))
        if done % cfg.checkpoint_every == 0 and done < cfg.max_steps:
            engine.save_checkpoint(
                str(args.checkpoints), tag=f"step{done}", client_state={"step": done}
            )
            if rank == 0:
                prune_checkpoints(args.checkpoints)
        if metrics:
            metrics.log(done, values)
        progress.set_postfix(loss=f"{values['train_loss']:.3f}")
        progress.update(1)
    progress.close()
    # A final checkpoint makes a re-run after a crash during consolidation instant.
    engine.save_checkpoint(
        str(args.checkpoints), tag=f"step{cfg.max_steps}", client_state={"step": cfg.max_steps}
    )
    probe = torch.as_tensor(val_arr[:2].astype(np.int64), device=device)
    consolidate(engine, engine.module, tokenizer, args.out, rank, probe)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    params = Reads.narrow(load_params(args.params))
    if args.init:  # the shape, for the FLOPs count and checkpoint fingerprint
        model = checkpoint.model_params(params.model, args.init)
        params = params.model_copy(update={"model": model})
    accelerator = deepspeed.get_accelerator()
    # Bind this rank to its GPU before any collective: NCCL's object collectives use the
    # current device (on the CPU accelerator this is a no-op).
    accelerator.set_device(int(os.environ.get("LOCAL_RANK", max(args.local_rank, 0))))
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())
    # Rank 0 reports: the history file and MLflow, which never stops training (step_metrics).
    # Leaving the block, normally or by an error, makes a last send and closes the history.
    metrics = StepMetrics(args.history, args.mlflow_run_id) if dist.get_rank() == 0 else None
    with metrics or contextlib.nullcontext():
        train(params, args, metrics)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
