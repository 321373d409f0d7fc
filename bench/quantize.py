"""Quantization benchmark: each variant of the quantize stage against fp32 at the serving
bench's model size, and whether vLLM serves it.

    python bench/quantize.py              # 29M Llama, both variants, vLLM check: ~10 min, 2 cores
    python bench/quantize.py --no-serve   # size, perplexity, agreement only

The model is a 29M-parameter Llama (hidden 512, 8 layers, 8 heads of 64, intermediate 1536, the
project's BPE vocabulary of 4096 trained on the bundled plays; random weights, seeded): large
enough that the linear layers, not the tied fp32 embedding, dominate the bytes. Rows of real
text (the bundled plays, tokenized) are the calibration set and, disjoint from it, the
held-out rows. Quantization runs exactly as in the stage (components/training/quantize.py:
shape check, llm-compressor worker in .venv-quantize, reload in transformers). Per variant:
- size_ratio: tensor bytes over fp32's;
- perplexity_change: exp(NLL_q - NLL_fp) - 1 on the held-out rows (the baseline, fp32, is
  measured in the same run on the same rows);
- top1_agreement: share of held-out positions where the greedy next token equals fp32's;
- serves: vLLM (.venv-serve) starts on the directory with the variant's dtype and answers one
  completion; seconds to ready.
Results: bench/results/quantize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import ModelParams, QuantizeVariant  # noqa: E402
from components.constants import ENV_SERVE_PYTHON  # noqa: E402
from components.modeling.io import load_for_inference  # noqa: E402
from components.modeling.llama import build_model  # noqa: E402
from components.tokenizer.train import train_tokenizer  # noqa: E402
from components.training import quantize  # noqa: E402

MODEL = ModelParams(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,  # head size 64
    num_key_value_heads=8,
    rope_theta=10000.0,
    max_position_embeddings=256,
)
VARIANTS = {
    "int8": QuantizeVariant(scheme="W8A8"),
    "int4": QuantizeVariant(scheme="W4A16", group_size=128),
}
# vLLM's CPU backend: W8A8 runs in float32; the int4 kernel needs bfloat16.
SERVE_DTYPE = {"fp32": "float32", "int8": "float32", "int4": "bfloat16"}
SEQ_LEN, HELD_OUT_ROWS = 128, 64
SERVE_TIMEOUT_S = 300


def prepare(work: Path, seed: int, calibration_rows: int) -> tuple[Path, Path]:
    """The fp32 model directory and a packed-like directory (train.npy, val.npy) of real text."""
    texts = [p.read_text() for p in sorted((ROOT / "data/raw/shakespeare").glob("*.txt"))][:4]
    tokenizer = train_tokenizer([texts], vocab_size=4096)
    torch.manual_seed(seed)
    model = build_model(MODEL, tokenizer)
    fp = work / "fp32"
    model.save_pretrained(fp)
    tokenizer.save_pretrained(fp)
    ids = np.concatenate([np.asarray(tokenizer(t)["input_ids"]) for t in texts])
    rows = ids[: len(ids) // SEQ_LEN * SEQ_LEN].reshape(-1, SEQ_LEN)
    pick = np.random.default_rng(seed).permutation(len(rows))
    packed = work / "packed"
    packed.mkdir()
    np.save(packed / "train.npy", rows[pick[:calibration_rows]])
    np.save(packed / "val.npy", rows[pick[calibration_rows : calibration_rows + HELD_OUT_ROWS]])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.1f}M parameters; {len(rows)} rows of {SEQ_LEN} tokens")
    return fp, packed


def quantize_all(fp: Path, packed: Path, work: Path, seed: int) -> tuple[dict, float]:
    quantize.check_shapes(AutoConfig.from_pretrained(fp), VARIANTS, fp)
    outs = {name: work / name for name in VARIANTS}
    spec = quantize.job(
        fp,
        packed / "train.npy",
        outs,
        {n: v.model_dump() for n, v in VARIANTS.items()},
        seed,
    )
    return outs, quantize.run_worker(spec, work)


def serve_check(model_dir: Path, dtype: str, port: int) -> dict:
    """Start vLLM's OpenAI server on the directory, ask one completion, stop it."""
    python = os.environ.get(ENV_SERVE_PYTHON) or str(ROOT / ".venv-serve/bin/python")
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    cmd += ["--dtype", dtype, "--port", str(port)]  # max-model-len: from config.json
    # CPU backend: a fixed KV cache (by default it reserves 92% of memory and refuses to start
    # when less is free) and eager mode (no torch.compile warm-up); see vllm_server.py.
    cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(256 * 2**20)]
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    log = Path(tempfile.gettempdir()) / f"vllm-{model_dir.name}-{port}.log"  # read on failure
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return _ask(proc, port, start, log) | {"dtype": dtype}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ask(proc: subprocess.Popen, port: int, start: float, log: Path) -> dict:
    base = f"http://127.0.0.1:{port}"
    while time.perf_counter() - start < SERVE_TIMEOUT_S:
        if proc.poll() is not None:
            return {"serves": False, "error": f"server exited with {proc.returncode}, see {log}"}
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as r:
                model = json.load(r)["data"][0]["id"]
            break
        except OSError:
            time.sleep(2)
    else:
        return {"serves": False, "error": f"not ready in {SERVE_TIMEOUT_S} s, see {log}"}
    ready = time.perf_counter() - start
    body = {"model": model, "prompt": "To be, or not", "max_tokens": 8, "temperature": 0}
    req = urllib.request.Request(
        f"{base}/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        text = json.load(r)["choices"][0]["text"]
    return {"serves": True, "ready_s": round(ready, 1), "completion": text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-serve", action="store_true", help="skip the vLLM check")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--calibration-rows", type=int, default=64, help="GPTQ calibration rows")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/quantize.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        work = Path(tmp)
        fp, packed = prepare(work, args.seed, args.calibration_rows)
        outs, seconds = quantize_all(fp, packed, work, args.seed)
        rows = np.load(packed / "val.npy")
        policy, _ = load_for_inference(fp)
        reference = quantize.next_token_scores(policy, rows)
        fp_bytes = quantize.tensor_bytes(fp)
        results: dict = {"fp32": {"perplexity": round(float(np.exp(reference[0])), 4)}}
        for name, d in outs.items():
            results[name] = quantize.compare(reference, d, rows, fp_bytes)
            results[name] |= VARIANTS[name].model_dump()
            print(name, results[name])
        if not args.no_serve:
            for i, (name, d) in enumerate({"fp32": fp, **outs}.items()):
                results[name]["vllm"] = serve_check(d, SERVE_DTYPE[name], 8100 + i)
                print(name, results[name]["vllm"])
    report = {
        "model": MODEL.model_dump() | {"vocab_size": 4096, "weights": "random, seeded"},
        "held_out": {"rows": HELD_OUT_ROWS, "seq_len": SEQ_LEN, "text": "bundled plays"},
        "calibration_rows": args.calibration_rows,
        "quantize_seconds": round(seconds, 1),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
