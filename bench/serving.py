"""Serving under load: vLLM (fp32, int8 W8A8, int4 W4A16) vs `transformers serve`, same model.

One run builds a 29M-parameter Llama (hidden 512, 8 layers, 8 heads of size 64, intermediate
1408, random weights; a byte-level BPE tokenizer trained on data/keeprate), quantizes it with
llm-compressor in `.venv-quantize` (the quantize stage's worker), then for each server in turn:
starts it, sends N concurrent streaming clients (1, 4, 16, 64) with mixed prompt and output
lengths through the official `openai` client, and stops it. Per point: requests/s, output
tokens/s (wall clock), time to first token and latency p50/p99.

The baseline is Hugging Face's OpenAI-compatible server (`transformers serve`, from the project
environment, default settings: no continuous batching) on the same fp32 directory.

    PYTHONPATH=. python -m bench.serving      # bench/results/serving.{json,png} + MLflow
    PYTHONPATH=. python -m bench.serving --quick   # fewer requests, 1 and 16 clients

Output tokens are counted by re-tokenizing each reply with the model's tokenizer, the same way
for every server (servers count usage differently, and `transformers serve` sends none when
streaming).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import DeployParams, ModelParams  # noqa: E402
from components.serving import vllm_server  # noqa: E402
from components.serving.client import percentile  # noqa: E402
from components.training import quantize_worker  # noqa: E402

OUT = ROOT / "bench" / "results"
TEXTS = ROOT / "data" / "keeprate" / "clean.jsonl"
# llm-compressor's environment (it pins transformers <= 5.17): see the Makefile.
QUANTIZE_PYTHON = Path(
    os.environ.get("LLMOPS_QUANTIZE_PYTHON", ROOT / ".venv-quantize" / "bin" / "python")
)
BENCH_MODEL = ModelParams(
    hidden_size=512,
    intermediate_size=1408,  # 11 x 128: GPTQ group size 128 and vLLM's CPU int4 kernel take it
    num_hidden_layers=8,
    num_attention_heads=8,  # head size 64
    num_key_value_heads=8,
    rope_theta=10000.0,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)
VOCAB = 8192
MAX_MODEL_LEN = 1024  # the 160-word prompts reach ~520 tokens on code-heavy text
PROMPT_WORDS = (8, 40, 160)  # ~1.3 tokens per word with this tokenizer
OUTPUT_TOKENS = (8, 16, 32)
PORT = 8931


def _texts() -> list[str]:
    return [json.loads(line)["text"] for line in TEXTS.read_text().splitlines() if line]


def build_model(work: Path) -> Path:
    """The fp32 bench model and its tokenizer under work/fp (seeded: same weights every run)."""
    import torch

    from components.modeling.llama import build_model as build
    from components.tokenizer.train import train_tokenizer

    out = work / "fp"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    texts = _texts()
    tokenizer = train_tokenizer([texts], vocab_size=VOCAB)
    model = build(BENCH_MODEL, tokenizer)
    print(f"bench model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# Round-to-nearest: serving speed depends on the checkpoint's format, not on how its values were
# chosen, and GPTQ at this size ran past 13 minutes on a shared 2-core machine (the quantize
# stage uses GPTQ where quality matters).
BENCH_VARIANTS = {
    "int8": {"scheme": "W8A8", "group_size": None, "algorithm": "rtn"},
    "int4": {"scheme": "W4A16", "group_size": 128, "algorithm": "rtn"},
}


def quantize(fp_dir: Path, work: Path, variant: str) -> Path | None:
    """The bench model quantized by the quantize stage's own worker, in `.venv-quantize`."""
    out = work / variant
    if (out / "config.json").exists():
        return out
    if not QUANTIZE_PYTHON.exists():
        print(f"no {QUANTIZE_PYTHON} (LLMOPS_QUANTIZE_PYTHON): skipping the {variant} variant")
        return None
    job_file = work / f"quantize-{variant}.json"
    job = quantize_worker.job(fp_dir, None, {variant: out}, {variant: BENCH_VARIANTS[variant]}, 0)
    job_file.write_text(json.dumps(job))
    cmd = [str(QUANTIZE_PYTHON), quantize_worker.__file__, str(job_file)]
    env = vllm_server.server_env(QUANTIZE_PYTHON)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"quantizing {variant} failed; skipping it:\n{done.stderr[-3000:]}")
        return None
    return out


def workload(n: int, seed: int) -> list[tuple[str, int]]:
    """n (prompt, max_tokens) pairs: prompt lengths and output lengths mixed, seeded."""
    rng = random.Random(seed)
    words = " ".join(_texts()[:200]).split()
    out = []
    for i in range(n):
        n_words = PROMPT_WORDS[i % len(PROMPT_WORDS)]
        start = rng.randrange(0, len(words) - n_words)
        out.append((" ".join(words[start : start + n_words]), rng.choice(OUTPUT_TOKENS)))
    return out


async def one_request(client, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    ttft = None
    parts: list[str] = []
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
        )
        async for chunk in stream:
            text = chunk.choices[0].text if chunk.choices else ""
            if text and ttft is None:
                ttft = time.perf_counter() - start
            parts.append(text)
    except Exception as err:  # noqa: BLE001 - any failure is counted, the run goes on
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return {
        "ok": True,
        "ttft_s": ttft if ttft is not None else time.perf_counter() - start,
        "latency_s": time.perf_counter() - start,
        "text": "".join(parts),
    }


async def run_point(base_url: str, model: str, clients: int, n_requests: int, seed: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=base_url,
        api_key=os.environ.get("LLMOPS_API_KEY", "EMPTY"),
        timeout=600,
        max_retries=0,
    )
    queue = list(workload(n_requests, seed))
    results: list[dict] = []

    async def worker() -> None:
        while queue:
            prompt, max_tokens = queue.pop()
            results.append(await one_request(client, model, prompt, max_tokens))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    return {"wall_s": wall, "results": results}


def summarize(point: dict, tokenizer) -> dict[str, Any]:
    ok = [r for r in point["results"] if r["ok"]]
    tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in ok)
    wall = point["wall_s"]
    lat = [r["latency_s"] for r in ok]
    ttft = [r["ttft_s"] for r in ok]
    return {
        "n": len(point["results"]),
        "n_ok": len(ok),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "output_tokens": tokens,
        "ttft_p50_s": round(percentile(ttft, 50), 3),
        "ttft_p99_s": round(percentile(ttft, 99), 3),
        "latency_p50_s": round(percentile(lat, 50), 3),
        "latency_p99_s": round(percentile(lat, 99), 3),
        "first_error": next((r["error"] for r in point["results"] if not r["ok"]), ""),
    }


def bench_deploy_params(**overrides: Any) -> DeployParams:
    """The servers' settings for the bench: its port and context, a long start-up allowance."""
    return DeployParams(
        port=PORT,
        max_model_len=MAX_MODEL_LEN,
        startup_timeout_s=600,
        n_requests=1,
        max_tokens=1,
        **overrides,
    )


@contextlib.contextmanager
def vllm(model_dir: Path, variant: str, log: Path) -> Iterator[str]:
    # dtype "auto": the serving code picks what this CPU's kernel for the variant accepts.
    cfg = bench_deploy_params(variant=variant, cpu_kv_cache_mib=512, api_key_env=None)
    with vllm_server.running_server(model_dir, cfg, "bench", log) as server:
        yield server.base_url


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path) -> Iterator[str]:
    """HF's server with the model preloaded, default settings, float32 on CPU. From the
    project environment (transformers 5.19 too): the serving environment lacks `accelerate`,
    which `transformers serve` needs to load a model."""
    python = sys.executable
    if vllm_server.port_in_use(PORT):  # else /health would be answered by whatever holds it
        raise RuntimeError(f"port {PORT} is in use: stop what listens there first")
    cmd = [str(Path(python).parent / "transformers"), "serve", str(model_dir)]
    cmd += [
        "--host",
        vllm_server.HOST,
        "--port",
        str(PORT),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    cfg = bench_deploy_params()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=vllm_server.server_env(python),
            start_new_session=True,
        )
        try:
            vllm_server.wait_ready(proc, cfg, log)
            yield vllm_server.base_url(cfg)
        finally:
            vllm_server.stop(proc)


# Requests per point (clients: requests): every client busy for at least one request. The
# baseline serves one request at a time (~3 tokens/s on the shared 2-core machine), so within the
# ~10-minute budget it gets one request per client and no 64-client point.
REQUESTS = {1: 4, 4: 8, 16: 32, 64: 64}
BASELINE_REQUESTS = {1: 2, 4: 4, 16: 16}
QUICK_REQUESTS = {1: 3, 16: 16}


def bench_server(
    name: str, server, model: str, requests: dict[int, int], tokenizer
) -> dict[str, dict]:
    points = {}
    with server as base_url:
        asyncio.run(run_point(base_url, model, 1, 2, seed=99))  # warm-up, not measured
        for c, n in requests.items():
            point = asyncio.run(run_point(base_url, model, c, n, seed=c))
            points[str(c)] = summarize(point, tokenizer)
            print(f"{name:12s} {c:3d} clients: {points[str(c)]}", flush=True)
    return points


def goals(servers: dict[str, dict]) -> dict[str, Any]:
    def at16(name: str, key: str) -> float | None:
        return servers.get(name, {}).get("16", {}).get(key)

    out: dict[str, Any] = {}
    base, fp = at16("transformers", "tokens_per_s"), at16("vllm_fp", "tokens_per_s")
    if base and fp:
        out["vllm_vs_baseline_tokens_per_s_16"] = round(fp / base, 2)
        out["vllm_p99_lower_16"] = at16("vllm_fp", "latency_p99_s") < at16(
            "transformers", "latency_p99_s"
        )
        out["goal_vllm_3x"] = out["vllm_vs_baseline_tokens_per_s_16"] >= 3
    for q in ("int8", "int4"):
        qv = at16(f"vllm_{q}", "tokens_per_s")
        if qv and fp:
            out[f"{q}_vs_fp_tokens_per_s_16"] = round(qv / fp, 2)
    if "int8_vs_fp_tokens_per_s_16" in out:
        out["goal_int8_1_1x"] = out["int8_vs_fp_tokens_per_s_16"] >= 1.1
    return out


def markdown(result: dict[str, Any]) -> str:
    """The README table: server x clients -> tokens/s, requests/s, TTFT p50, latency p50/p99."""
    lines = [
        "| server | clients | requests | tokens/s | requests/s | TTFT p50 s | latency p50 s "
        "| latency p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, points in result["servers"].items():
        for c, p in points.items():
            lines.append(
                f"| {name} | {c} | {p['n_ok']}/{p['n']} | {p['tokens_per_s']} | "
                f"{p['requests_per_s']} | {p['ttft_p50_s']} | {p['latency_p50_s']} | "
                f"{p['latency_p99_s']} |"
            )
    goals = ", ".join(f"{k}: {v}" for k, v in result["goals"].items())
    m = result["machine"]
    return "\n".join(
        [
            *lines,
            "",
            f"Goals: {goals}.",
            "",
            f"Machine: {m['cpus']} CPUs ({m['cpu']}), "
            f"load average at the end {m['load_avg_at_end']}; {m['note']}.",
            "",
        ]
    )


def plot(servers: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, points in servers.items():
        cs = [int(c) for c in points]
        for ax, key in zip(axes, ("tokens_per_s", "latency_p99_s", "ttft_p50_s"), strict=True):
            ax.plot(cs, [points[str(c)][key] for c in cs], marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_title(key)
    axes[0].legend()
    fig.suptitle("serving: vLLM variants vs transformers serve (29M Llama, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def log_to_mlflow(result: dict, paths: list[Path]) -> None:
    import mlflow

    from components.tracking import mlflow_env

    mlflow_env.configure()
    mlflow.set_experiment("llmops-bench")
    with mlflow.start_run(run_name="serving"):
        metrics = {
            f"{name}.c{c}.{k}": v
            for name, points in result["servers"].items()
            for c, summary in points.items()
            for k, v in summary.items()
            if isinstance(v, int | float)
        }
        metrics.update({k: float(v) for k, v in result["goals"].items()})
        mlflow.log_metrics(metrics)
        for p in paths:
            mlflow.log_artifact(str(p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 and 16 clients, fewer requests")
    ap.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "llmops-bench-serving"
    )
    ap.add_argument("--variants", default="fp,int8,int4")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT / "serving.json")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    requests = QUICK_REQUESTS if args.quick else REQUESTS
    t0 = time.perf_counter()
    fp_dir = build_model(args.work)
    tokenizer = AutoTokenizer.from_pretrained(fp_dir)
    dirs = {}
    for variant in args.variants.split(","):
        if variant == "fp":
            dirs["fp"] = fp_dir
        elif d := quantize(fp_dir, args.work, variant):
            dirs[variant] = d
    sizes = {v: sum(f.stat().st_size for f in d.glob("*.safetensors")) for v, d in dirs.items()}
    servers: dict[str, dict] = {}
    if not args.no_baseline:  # first: the slowest, and the one most likely to fail
        servers["transformers"] = bench_server(
            "transformers",
            transformers_serve(fp_dir, args.work / "transformers.log"),
            str(fp_dir),  # with a preloaded model HF's server names it by its path
            QUICK_REQUESTS if args.quick else BASELINE_REQUESTS,
            tokenizer,
        )
    for variant, d in dirs.items():
        log = args.work / f"vllm_{variant}.log"
        servers[f"vllm_{variant}"] = bench_server(
            f"vllm_{variant}", vllm(d, variant, log), "bench", requests, tokenizer
        )
    result = {
        "machine": machine(),
        "model": {
            **BENCH_MODEL.model_dump(),
            "vocab_size": VOCAB,
            "dtype_per_variant": {
                v: vllm_server.server_dtype(bench_deploy_params(variant=v), cpu=True)
                for v in args.variants.split(",")
            },
            "weights_bytes": sizes,
        },
        "workload": {
            "prompt_words": PROMPT_WORDS,
            "output_tokens": OUTPUT_TOKENS,
            "requests_per_point": {"vllm": requests, "transformers": BASELINE_REQUESTS},
            "decoding": "greedy, streaming /v1/completions",
        },
        "servers": servers,
        "goals": goals(servers),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot(servers, png)
    args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result["goals"], indent=2))
    if not args.no_mlflow:
        log_to_mlflow(result, [args.out, png])


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_at_end": os.getloadavg(),
        "note": "shared machine (several engineers' jobs running), run under nice -n 10",
    }


if __name__ == "__main__":
    main()
