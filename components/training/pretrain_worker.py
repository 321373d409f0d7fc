"""One rank of DeepSpeed pretraining. Launched by the pretrain stage through the DeepSpeed launcher.

Reads top to bottom: setup (distributed, model under ZeRO-3 init, engine) → resume → train loop
(with validation and checkpoints) → consolidate to Hugging Face safetensors on rank 0.

Determinism, so a killed run resumes to the same result: the batch of step s and the RNG seed of
step s are pure functions of (seed, s, rank); a checkpoint only has to remember s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
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
from components.modeling.llama import llama_config
from components.training.checkpoints import (
    fingerprint,
    prepare_checkpoints,
    prune_checkpoints,
    resume_step,
)
from components.training.ds_config import optimizer_kwargs
from components.training.planner import count_parameters, flops_per_token
from components.training.sizing import model_shape

log = logging.getLogger("pretrain")
PARTITION_FILE = "partition.json"  # how the parameters were split across ranks
CONSOLIDATION_FILE = "consolidation.json"
MEMORY_FILE = "model_state_memory.json"  # measured ZeRO-3 model-state bytes per rank
# Saved safetensors vs the live sharded model, max |logit difference| on one batch.
LOGIT_TOLERANCE = 1e-4


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
    dist.all_reduce(total)
    engine.train()
    return (total[0] / total[1].clamp(min=1)).item()


def consolidate(engine, model, tokenizer, out: Path, rank: int, probe: torch.Tensor) -> None:
    """Gather the ZeRO-3 shards, write HF safetensors on rank 0, and check the written model
    gives the live sharded model's logits on `probe` (batch, seq)."""
    engine.eval()
    with torch.no_grad():
        live = engine(input_ids=probe).logits.float().cpu()  # every rank: ZeRO-3 all-gathers
    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank == 0:
            state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    if rank == 0:
        full = AutoModelForCausalLM.from_config(model.config)
        missing, unexpected = full.load_state_dict(state, strict=False)
        # Tied embeddings show up as a missing lm_head; anything else is a real mismatch.
        if unexpected or [m for m in missing if m != "lm_head.weight"]:
            raise RuntimeError(f"consolidation mismatch: missing={missing} unexpected={unexpected}")
        out.mkdir(parents=True, exist_ok=True)
        full.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
        with torch.no_grad():
            diff = (reloaded(input_ids=probe.cpu()).logits.float() - live).abs().max().item()
        (out / CONSOLIDATION_FILE).write_text(json.dumps({"max_abs_logit_diff": diff}))
        if diff > LOGIT_TOLERANCE:
            raise RuntimeError(
                f"consolidated model differs from the trained one: max |logit "
                f"difference| {diff:.2e} > {LOGIT_TOLERANCE}"
            )
        log.info("consolidated %s; max |logit difference| vs live model %.2e", out, diff)
    dist.barrier()


def partition_report(model, rank: int, world: int) -> dict | None:
    """Elements of every parameter this rank holds (ZeRO-3 keeps a 1/world shard of each)."""
    local = torch.tensor(
        [getattr(p, "ds_tensor", p).numel() for p in model.parameters()], dtype=torch.int64
    )
    full = [getattr(p, "ds_numel", p.numel()) for p in model.parameters()]
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
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


class MlflowStepLogger:
    """Rank 0 streams step metrics to the stage's MLflow run, in small batches."""

    def __init__(self, run_id: str, history: Path):
        self.run_id = run_id
        self.pending: list = []
        self.history = history.open("a")
        if run_id:
            from mlflow import MlflowClient

            from components.tracking.mlflow_env import tracking_uri

            self.client = MlflowClient(tracking_uri())

    def log(self, step: int, values: dict[str, float]) -> None:
        self.history.write(json.dumps({"step": step, **values}) + "\n")
        self.history.flush()
        if not self.run_id:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), ts, step) for k, v in values.items()]
        if len(self.pending) >= 50:
            self.flush()

    def flush(self) -> None:
        if self.run_id and self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []


def build_model(params: Reads, tokenizer, ds_config: dict) -> torch.nn.Module:
    """The model, each rank allocating only its ZeRO-3 shard."""
    torch.manual_seed(params.seed)  # identical init on every rank before partitioning
    # While `hf_ds` lives, transformers builds the model under deepspeed.zero.Init and
    # initialises weights with the shards gathered. It must not outlive this function: later
    # from_config/from_pretrained calls on rank 0 alone would wait for the other ranks forever.
    hf_ds = HfDeepSpeedConfig(ds_config) if params.pretrain.zero_stage == 3 else None
    model = AutoModelForCausalLM.from_config(llama_config(params.model, tokenizer))
    del hf_ds
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


def train(params: Reads, args: argparse.Namespace) -> None:
    cfg = params.pretrain
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(deepspeed.get_accelerator().device_name())
    ds_config = json.loads(args.ds_config.read_text())
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    model = build_model(params, tokenizer, ds_config)
    client_opt = None
    if "optimizer" not in ds_config:
        client_opt = torch.optim.AdamW(model.parameters(), **optimizer_kwargs(cfg))
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=client_opt, model_parameters=model.parameters(), config=ds_config
    )

    prepare_checkpoints(args.checkpoints, fingerprint(params, args.data), rank, world, args.history)
    report = partition_report(engine.module, rank, world)
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
    # Rank 0 reports: MLflow metrics, the history file and the progress bar.
    logger = MlflowStepLogger(args.mlflow_run_id, args.history) if rank == 0 else None
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
        dist.all_reduce(loss_t)
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
        if step == start and cfg.zero_stage == 3:  # Adam's moments exist after the first step
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
        if logger:
            logger.log(done, values)
        progress.set_postfix(loss=f"{values['train_loss']:.3f}")
        progress.update(1)
    progress.close()
    if logger:
        logger.flush()
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
    on_gpu = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    train(params, args)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
