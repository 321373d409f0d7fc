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


def test_summary_counts_tokens_of_successes_over_wall_time(tok):
    n_tokens = len(tok("the king speaks", add_special_tokens=False)["input_ids"])
    point = {
        "wall_s": 2.0,
        "results": [
            {"ok": True, "ttft_s": 0.1, "latency_s": 1.0, "text": "the king speaks"},
            {"ok": True, "ttft_s": 0.3, "latency_s": 2.0, "text": "the king speaks"},
            {"ok": False, "error": "boom"},
        ],
    }
    s = serving.summarize(point, tok)
    assert (s["n"], s["n_ok"], s["output_tokens"]) == (3, 2, 2 * n_tokens)
    assert s["tokens_per_s"] == round(2 * n_tokens / 2.0, 1) and s["requests_per_s"] == 1.0
    assert s["latency_p50_s"] == 1.5 and s["ttft_p99_s"] > 0.29 and s["first_error"] == "boom"


def test_goals_compare_at_16_clients():
    point = {"tokens_per_s": 10.0, "latency_p99_s": 9.0}
    servers = {
        "transformers": {"16": point},
        "vllm_fp": {"16": {"tokens_per_s": 40.0, "latency_p99_s": 2.0}},
        "vllm_int8": {"16": {"tokens_per_s": 42.0, "latency_p99_s": 2.0}},
    }
    g = serving.goals(servers)
    assert g["vllm_vs_baseline_tokens_per_s_16"] == 4.0 and g["goal_vllm_3x"]
    assert g["vllm_p99_lower_16"] and g["int8_vs_fp_tokens_per_s_16"] == 1.05
    assert not g["goal_int8_1_1x"] and "int4_vs_fp_tokens_per_s_16" not in g


def test_markdown_table_has_a_row_per_server_and_point():
    point = {
        "n": 2, "n_ok": 2, "tokens_per_s": 5.0, "requests_per_s": 0.5,
        "ttft_p50_s": 0.1, "latency_p50_s": 1.0, "latency_p99_s": 2.0,
    }  # fmt: skip
    result = {
        "servers": {"vllm_fp": {"1": point, "16": point}, "transformers": {"1": point}},
        "goals": {"goal_vllm_3x": True},
        "machine": {"cpus": 2, "cpu": "x86_64", "load_avg_at_end": (1, 1, 1), "note": "shared"},
    }
    md = serving.markdown(result)
    assert md.count("| vllm_fp |") == 2 and "| transformers | 1 | 2/2 | 5.0 |" in md
    assert "goal_vllm_3x: True" in md and "2 CPUs" in md
