"""GPU benchmark: the project's pretrain path and post-training against a bare PyTorch loop.

    make bench-gpu                      # python bench/gpu.py, on a CUDA machine (< 8 min, 1 H100)
    python bench/gpu.py --smoke         # the same code paths at toy size on CPU (wiring only)

On one GPU, for the `cluster` profile's model shape (hidden 2048, 22 layers, 32 heads, 4 KV
heads, a 32k vocabulary) on random tokens, sequence 2048, micro-batch 8 x accumulation 2, in one
process tree:
1. the bare loop: fp32 master weights, bf16 autocast, torch's fused AdamW, SDPA attention;
   eager and `torch.compile`d (each in its own process, so memory peaks are its own);
2. the real pretrain path (`deepspeed_config` -> `launch_command` -> `pretrain_worker`, one
   rank) for N steps, with the speed switches on (`pretrain.compile`, Liger Kernel when it
   imports) and the planner's cheapest fitting ZeRO stage, ending with consolidation;
3. one SFT and one DPO step (TRL) on the consolidated model, through the stages' own
   TrainingArguments (`posttrain.device: auto` -> cuda, bf16), then one LoRA and one QLoRA SFT
   step through the stages' own `load_trainable` + `lora_config` (`sft.lora` from params.yaml;
   QLoRA's NF4 base computes in bf16 on the GPU), each with its trainable fraction; QLoRA is
   recorded as skipped when bitsandbytes does not import;
then one JSON summary: tokens/s, MFU, ratios to the bare loops, peak memory, consolidation error.
Without a GPU it says so and exits 0 (nothing is measured); `--smoke` runs every step on CPU at
toy size to prove the wiring, with numbers that mean nothing for GPUs.

Imports only torch, transformers, deepspeed, trl, peft (bitsandbytes for QLoRA, when present) and
the params schema: it runs on a bare CUDA image (no MLflow, Prefect or DVC).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker_run import run_worker  # noqa: E402
from components.chat import CHAT_TEMPLATE, EOS, IM_END, IM_START, PAD  # noqa: E402
from components.config import LoraParams, Params, load_params  # noqa: E402
from components.training.ds_config import optimizer_kwargs  # noqa: E402
from components.training.planner import count_parameters, flops_per_token  # noqa: E402
from components.training.sizing import model_shape, zero_stage_for  # noqa: E402

NO_GPU = "bench/gpu.py: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured"
GPU_PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16, the MFU reference
VOCAB = 32_000  # the cluster profile's tokenizer.vocab_size
# Toy shape for --smoke: the same code paths in seconds on CPU.
SMOKE_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def bench_params(smoke: bool, steps: int) -> Params:
    """params.yaml with the cluster profile's model shape (or the toy one) and the issue's batch."""
    params = load_params(ROOT / "params.yaml")
    model = SMOKE_MODEL if smoke else params.profiles["cluster"]["model"]
    seq = 64 if smoke else params.profiles["cluster"]["pack"]["seq_len"]
    raw = params.model_dump(mode="json")
    raw["model"] |= model | {"max_position_embeddings": max(seq, 256)}
    raw["pack"]["seq_len"] = seq
    raw["cluster"] |= {"nodes": 1, "ranks_per_node": 1, "hosts": []}
    if not smoke:
        raw["cluster"] |= {"accelerator_memory_gb": gpu_memory_gb(), "peak_tflops": GPU_PEAK_TFLOPS}
    raw["pretrain"] |= {
        "micro_batch_size": 2 if smoke else 8,
        "grad_accum_steps": 2,
        "max_steps": steps,
        "warmup_steps": 1,
        "eval_every": steps,
        "eval_batches": 1,
        "checkpoint_every": steps + 1,
        "max_train_sequences": None,
        "compile": not smoke,  # inductor on CPU costs minutes of compile for nothing
        "liger_kernel": not smoke and liger_available(),
    }
    return Params.model_validate(raw)


def gpu_memory_gb() -> float:
    return torch.cuda.get_device_properties(0).total_memory / 1e9


def liger_available() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError:
        return False
    return True


def make_tokenizer(out: Path, vocab: int):
    """A word-level tokenizer of exactly `vocab` entries with the project's special tokens: the
    benchmark needs the shape of the vocabulary, not a trained one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, PAD, IM_START, IM_END]
    words = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab - 4)])}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=1_000_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def make_data(out: Path, vocab: int, seq: int, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(out / "train.npy", rng.integers(4, vocab, (n, seq), dtype=np.int32))
    np.save(out / "val.npy", rng.integers(4, vocab, (16, seq), dtype=np.int32))
    (out / "index.json").write_text(json.dumps({"synthetic": True, "seq_len": seq}))
    return out


def step_flops(params: Params, vocab: int) -> float:
    shape = model_shape(params.model, vocab)
    seq, pre = params.pack.seq_len, params.pretrain
    per_token = flops_per_token(shape, count_parameters(shape).active, seq)
    return per_token * pre.micro_batch_size * pre.grad_accum_steps * seq


# ---- 1. the bare loop (child process) ----------------------------------------------------


def bare_loop(params: Params, tokenizer_dir: Path, data: Path, steps: int, compiled: bool) -> dict:
    """fp32 master weights, bf16 autocast on GPUs, fused AdamW, SDPA: the baseline to beat."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.modeling.llama import llama_config

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(params.seed)
    config = llama_config(params.model, AutoTokenizer.from_pretrained(tokenizer_dir))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    opt = torch.optim.AdamW(model.parameters(), **optimizer_kwargs(params.pretrain), fused=cuda)
    forward = torch.compile(model) if compiled else model
    pre = params.pretrain
    train = np.load(data / "train.npy", mmap_mode="r")
    times = []
    for step in range(steps):
        start = step * pre.micro_batch_size * pre.grad_accum_steps
        t0 = time.perf_counter()
        for m in range(pre.grad_accum_steps):
            rows = train[start + m * pre.micro_batch_size : start + (m + 1) * pre.micro_batch_size]
            x = torch.as_tensor(rows.astype(np.int64), device=device)  # (micro, seq)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = forward(input_ids=x, labels=x).loss / pre.grad_accum_steps
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), pre.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()  # kernels are async: time what ran
        times.append(time.perf_counter() - t0)
    return {"step_s": times, "peak_memory_gb": peak_memory_gb()}


def peak_memory_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def summarise(step_s: list[float], warmup: int, tokens_per_step: int, flops: float, peak: float):
    s = statistics.median(step_s[warmup:])
    return {"tokens_per_s": tokens_per_step / s, "mfu": flops / s / (peak * 1e12), "step_s": s}


# ---- 2. the real pretrain path -----------------------------------------------------------


def pretrain_path(params: Params, tokenizer_dir: Path, data: Path, work: Path) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # The planner's cheapest fitting stage, as the pretrain stage resolves `zero_stage: auto`
    # (one rank: ZeRO-0, there is nobody to shard with).
    stage = zero_stage_for(params, tokenizer_dir, device)
    print(f"pretrain path: {stage.reason}", flush=True)
    run = run_worker(params, tokenizer_dir, data, work, device, zero_stage=stage.zero_stage)
    pre = params.pretrain
    tokens_per_step = pre.micro_batch_size * pre.grad_accum_steps * params.pack.seq_len
    return {
        "wall_s": run.wall_s,
        "step_s": [tokens_per_step / r["tokens_per_s"] for r in run.history()],
        "settings": run.settings(),
        "consolidation": run.consolidation(),
        "model": str(run.model),
    }


# ---- 3. one SFT, one DPO, one LoRA and one QLoRA SFT step (child process) ----------------


def post_steps(model_dir: Path, seq: int, lora: LoraParams) -> dict:
    """One optimizer step each, through the stages' own TrainingArguments (posttrain: auto)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from components.config import PostTrainParams
    from components.training.trainer_args import trainer_kwargs

    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = np.random.default_rng(0)

    def text(n: int) -> str:
        return " ".join(f"w{i}" for i in rng.integers(1, 1000, n))

    batch, out = 2, {}
    with tempfile.TemporaryDirectory() as scratch:
        common = trainer_kwargs(Path(scratch), 0, PostTrainParams()) | {
            "max_steps": 1,
            "per_device_train_batch_size": batch,
            "max_length": seq,
        }
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        sft = SFTTrainer(
            model=model,
            args=SFTConfig(**common),
            train_dataset=Dataset.from_list([{"text": text(seq)} for _ in range(batch)]),
            processing_class=tok,
        )
        out["sft"] = timed(sft.train)
        del sft, model
        pairs = [
            {"prompt": text(seq // 4), "chosen": text(seq // 4), "rejected": text(seq // 4)}
            for _ in range(batch)
        ]
        policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        dpo = DPOTrainer(
            model=policy,
            ref_model=ref,
            args=DPOConfig(**common),
            train_dataset=Dataset.from_list(pairs),
            processing_class=tok,
        )
        out["dpo"] = timed(dpo.train)
        out["bf16"] = dpo.args.bf16
        out["device"] = str(dpo.args.device)
        del dpo, policy, ref
        rows = Dataset.from_list([{"text": text(seq)} for _ in range(batch)])
        out["lora"] = lora_sft_step(model_dir, tok, rows, SFTConfig(**common), lora)
        if bitsandbytes_available():
            qlora = lora.model_copy(update={"qlora": True})
            out["qlora"] = lora_sft_step(model_dir, tok, rows, SFTConfig(**common), qlora)
        else:
            out["qlora"] = {"skipped": "bitsandbytes not installed"}
    return out


def lora_sft_step(model_dir: Path, tok, rows, args, lora: LoraParams) -> dict:
    """One SFT step on adapters, loaded as the sft stage loads them (QLoRA: NF4 on this device)."""
    from trl import SFTTrainer

    from components.training.lora_load import load_trainable, lora_config

    gc.collect()  # the previous steps' trainers (reference cycles) freed before this peak
    model = load_trainable(model_dir, lora)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tok,
        peft_config=lora_config(lora),
    )
    # PEFT's count: a 4-bit weight counts as its parameters, not as its packed bytes.
    trainable, total = trainer.model.get_nb_trainable_parameters()
    return timed(trainer.train) | {"trainable_fraction": trainable / total}


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def timed(train) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train()
    return {
        "wall_s": time.perf_counter() - t0,
        "loss": result.training_loss,
        "peak_memory_gb": peak_memory_gb(),
    }


# ---- orchestration -----------------------------------------------------------------------


def child(argv: list[str]) -> dict:
    """Run one measurement in this (fresh) process and return its JSON."""
    cmd = [sys.executable, __file__, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:2])} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(smoke: bool, steps: int, warmup: int, out: Path) -> dict:
    params = bench_params(smoke, steps)
    vocab = 512 if smoke else VOCAB
    peak = params.cluster.peak_tflops
    pre = params.pretrain
    tokens_per_step = pre.micro_batch_size * pre.grad_accum_steps * params.pack.seq_len
    flops = step_flops(params, vocab)
    with tempfile.TemporaryDirectory(prefix="llmops-bench-gpu-") as tmp:
        work = Path(tmp)
        make_tokenizer(work / "tokenizer", vocab)
        data = make_data(work / "packed", vocab, params.pack.seq_len, steps * tokens_per_step)
        (work / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
        base = ["--params", str(work / "params.yaml"), "--work", str(work)]
        base += ["--steps", str(steps)]
        bare = {name: child(["--child", name, *base]) for name in ("bare_eager", "bare_compiled")}
        ds = pretrain_path(params, work / "tokenizer", data, work / "pretrain")
        post = child(["--child", "post", *base, "--model", ds["model"]])
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "smoke": smoke,
        "parameters": count_parameters(model_shape(params.model, vocab)).total,
        "seq_len": params.pack.seq_len,
        "micro_batch": pre.micro_batch_size,
        "grad_accum": pre.grad_accum_steps,
        "steps": steps,
        "peak_tflops": peak,
        "bare_eager": summarise(bare["bare_eager"]["step_s"], warmup, tokens_per_step, flops, peak)
        | {"peak_memory_gb": bare["bare_eager"]["peak_memory_gb"]},
        "bare_compiled": summarise(
            bare["bare_compiled"]["step_s"], warmup, tokens_per_step, flops, peak
        )
        | {"peak_memory_gb": bare["bare_compiled"]["peak_memory_gb"]},
        "pretrain": summarise(ds["step_s"], warmup, tokens_per_step, flops, peak)
        | {
            "wall_s": ds["wall_s"],
            "settings": ds["settings"],
            "consolidation": ds["consolidation"],
        },
        "post_training": post,
    }
    result["ratio_pretrain_vs_bare_eager"] = (
        result["pretrain"]["tokens_per_s"] / result["bare_eager"]["tokens_per_s"]
    )
    result["ratio_pretrain_vs_bare_compiled"] = (
        result["pretrain"]["tokens_per_s"] / result["bare_compiled"]["tokens_per_s"]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy size on CPU: wiring only")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=None, help="steps left out of the timings")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    ap.add_argument("--child", choices=["bare_eager", "bare_compiled", "post"])
    ap.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        params = load_params(args.params)
        if args.child == "post":
            lora = params.sft.lora.model_copy(update={"enabled": True, "qlora": False})
            res = post_steps(args.model, params.pack.seq_len, lora)
        else:
            res = bare_loop(
                params,
                args.work / "tokenizer",
                args.work / "packed",
                args.steps,
                compiled=args.child == "bare_compiled",
            )
        print(json.dumps(res))
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    steps = args.steps or (6 if args.smoke else 30)
    warmup = args.warmup if args.warmup is not None else (2 if args.smoke else 8)
    if args.smoke and args.out == ROOT / "bench" / "results" / "gpu.json":
        args.out = ROOT / "bench" / "results" / "gpu-smoke.json"
    result = run(args.smoke, steps, warmup, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
