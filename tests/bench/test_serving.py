"""The serving bench's bookkeeping: workload mix, per-point summary and the goal ratios."""

from __future__ import annotations

import pytest

from bench import serving
from components.tokenizer.train import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = ["the king speaks to his lords", "python opens a file"] * 50
    return train_tokenizer([texts], vocab_size=300, min_frequency=1)


def test_workload_mixes_prompt_and_output_lengths_and_is_seeded():
    work = serving.workload(12, seed=3)
    assert work == serving.workload(12, seed=3)
    assert {len(p.split()) for p, _ in work} == set(serving.PROMPT_WORDS)
    assert {n for _, n in work} <= set(serving.OUTPUT_TOKENS) and len({n for _, n in work}) > 1


def test_summary_pools_repeats_and_keeps_each_repeats_tokens_per_s(tok):
    n_tokens = len(tok("the king speaks", add_special_tokens=False)["input_ids"])
    ok = {"ok": True, "ttft_s": 0.1, "latency_s": 1.0, "text": "the king speaks"}
    first = {"wall_s": 2.0, "results": [ok, {**ok, "ttft_s": 0.3, "latency_s": 2.0}]}
    second = {"wall_s": 1.0, "results": [ok, {"ok": False, "error": "boom"}]}
    s = serving.summarize([first, second], tok)
    assert (s["n"], s["n_ok"], s["repeats"], s["output_tokens"]) == (4, 3, 2, 3 * n_tokens)
    assert s["tokens_per_s_repeats"] == [round(2 * n_tokens / 2.0, 1), float(n_tokens)]
    assert s["tokens_per_s"] == sum(s["tokens_per_s_repeats"]) / 2  # the median of two
    assert s["requests_per_s"] == 1.0 and s["first_error"] == "boom"
    assert s["latency_p50_s"] == 1.0 and s["ttft_p99_s"] > 0.29


def _point(*repeats: float) -> dict:
    return {
        "tokens_per_s": sorted(repeats)[len(repeats) // 2],
        "tokens_per_s_repeats": list(repeats),
    }


def test_ratios_come_with_their_spread_over_the_repeats():
    servers = {
        "transformers": {"16": _point(10.0, 10.0), "1": _point(20.0, 20.0)},
        "vllm_fp": {"16": _point(40.0, 40.0), "1": _point(10.0, 10.0)},
        "vllm_fp_gateway": {"16": _point(30.0, 38.0)},
        "vllm_int8": {"16": _point(42.0, 42.0)},
    }
    g = serving.goals(servers)
    assert g["vllm_vs_baseline_tokens_per_s_16"] == {"ratio": 4.0, "min": 4.0, "max": 4.0}
    assert g["vllm_vs_baseline_tokens_per_s_1"]["ratio"] == 0.5 and g["goal_vllm_3x"]
    assert g["gateway_vs_direct_fp_tokens_per_s_16"] == {"ratio": 0.95, "min": 0.75, "max": 0.95}
    assert g["int8_vs_fp_tokens_per_s_16"]["ratio"] == 1.05 and not g["goal_int8_1_1x"]
    assert (
        "int4_vs_fp_tokens_per_s_16" not in g and "gateway_vs_direct_int8_tokens_per_s_16" not in g
    )


def test_markdown_table_has_a_row_per_server_and_point():
    point = {
        "n": 2, "n_ok": 2, "tokens_per_s": 5.0, "requests_per_s": 0.5,
        "ttft_p50_s": 0.1, "latency_p50_s": 1.0, "latency_p99_s": 2.0,
    }  # fmt: skip
    result = {
        "model": {"name": "smollm2"},
        "servers": {"vllm_fp": {"1": point, "16": point}, "transformers": {"1": point}},
        "goals": {
            "goal_vllm_3x": True,
            "int8_vs_fp_tokens_per_s_16": {"ratio": 1.2, "min": 1.1, "max": 1.3},
        },
        "machine": {
            "cpus": 2, "cpu": "x86_64", "load_avg_at_start": (0, 0, 0),
            "load_avg_at_end": (1, 1, 1), "note": "quiet",
        },
    }  # fmt: skip
    md = serving.markdown(result)
    assert md.count("| vllm_fp |") == 2 and "| transformers | 1 | 2/2 | 5.0 |" in md
    assert "goal_vllm_3x: True" in md and "2 CPUs" in md and "1.2 (1.1-1.3)" in md
    assert "Model: smollm2" in md
