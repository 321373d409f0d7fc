"""Memory of one training step: full fine-tuning vs LoRA vs QLoRA (4-bit NF4 base), on CPU.

    PYTHONPATH=. python bench/adapter_memory.py [--layers 12 --hidden 768]

A Llama of ~100 M parameters (random weights, saved once as safetensors) is loaded the way the
sft/align stages load it (`components.training.adapters.load_trainable`, LoRA from
`adapters.lora_config` with params.yaml's `sft.lora` rank and target modules), then trains one
AdamW step on random tokens. Each mode runs in its own fresh process, so the numbers do not mix:
- `weights_mb`: parameters + buffers as stored (transformers' `get_memory_footprint`);
- `trainable_params`, `grads_mb` (the gradients the step left), `optimizer_state_mb` (AdamW's
  two moments, fp32), and `train_state_mb`, their sum with the weights: the exact tensor bytes a
  training step holds besides activations;
- `rss_step_mb`: resident memory after the step, minus the process's before loading the model
  (weights + gradients + optimizer state + allocator slack);
- `peak_rss_mb`: the process's peak resident memory (ru_maxrss) minus that baseline; for QLoRA
  it includes loading the fp32 checkpoint before quantising it, layer by layer.
Results: bench/results/adapter_memory.json (one run of each mode, same machine, same model).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("full", "lora", "qlora")
BATCH, SEQ = 4, 128


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def save_model(out: Path, layers: int, hidden: int, vocab: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=SEQ,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def measure(mode: str, model_dir: Path) -> dict[str, float]:
    """One training step in this process; called in a fresh interpreter per mode."""
    import torch
    from peft import get_peft_model

    from components.config import load_params
    from components.training import adapters

    base_rss = rss_mb()
    lora = load_params(ROOT / "params.yaml").sft.lora.model_copy(
        update={"enabled": mode != "full", "qlora": mode == "qlora"}
    )
    model = adapters.load_trainable(model_dir, lora)
    if lora.enabled:
        model = get_peft_model(model, adapters.lora_config(lora))
    weights = model.get_memory_footprint()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator())
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - start
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    return {
        "weights_mb": round(weights / 2**20, 1),
        "trainable_params": sum(p.numel() for p in trainable),
        "grads_mb": round(grads / 2**20, 1),
        "optimizer_state_mb": round(state / 2**20, 1),
        "train_state_mb": round((weights + grads + state) / 2**20, 1),
        "rss_step_mb": round(rss_mb() - base_rss, 1),
        "peak_rss_mb": round(peak_rss_mb() - base_rss, 1),
        "step_s": round(step_s, 2),
        "loss": round(float(loss), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.model_dir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        n_params = save_model(Path(tmp), args.layers, args.hidden, args.vocab)
        results = {}
        for mode in MODES:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--model-dir", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(mode, results[mode], flush=True)
    full = results["full"]
    out = {
        "model": {
            "params": n_params,
            "layers": args.layers,
            "hidden": args.hidden,
            "vocab": args.vocab,
            "batch": BATCH,
            "seq": SEQ,
        },
        "device": "cpu (torch 2.13, bitsandbytes CPU backend)",
        "modes": results,
        "ratio_to_full": {
            m: {
                k: round(r[k] / full[k], 3)
                for k in ("weights_mb", "train_state_mb", "rss_step_mb", "peak_rss_mb")
                if full[k]
            }
            for m, r in results.items()
        },
    }
    path = ROOT / "bench/results/adapter_memory.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
