"""Near-dedup quality: MinHash LSH (+ exact Jaccard check) vs brute-force Jaccard on all pairs.

    python bench/dedup_quality.py               # 400 base docs × 3 = 1,200 docs, ~1 minute

On a corpus with planted near-duplicates (tests/fixtures/planted.py), the truth is every pair
whose exact shingle Jaccard ≥ threshold, computed over all pairs. Reports pair precision and
recall (goal: recall ≥ 0.95, precision ≥ 0.99 at Jaccard ≥ 0.8) and documents/s for the
FineWeb (14 bands × 8 rows) and NeMo-Curator (20 × 13) settings and the project's params.
Results: bench/results/dedup_quality.json and MLflow (experiment `llmops-bench`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import load_params  # noqa: E402
from components.data.near_dedup import (  # noqa: E402
    NearDedupConfig,
    candidate_pairs,
    jaccard,
    shingles,
)
from tests.fixtures.planted import planted_corpus  # noqa: E402


def brute_force(sets: list[set], threshold: float) -> tuple[set[tuple[int, int]], list[float]]:
    truth, sims = set(), []
    for i, j in combinations(range(len(sets)), 2):
        s = jaccard(sets[i], sets[j])
        if s >= threshold:
            truth.add((i, j))
        if s >= 0.5:
            sims.append(s)
    return truth, sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-docs", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup_quality.json"))
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()

    nd = load_params(ROOT / "params.yaml").curate.near_dedup
    project = NearDedupConfig(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, threshold=nd.threshold)
    settings = {
        "fineweb_14x8": NearDedupConfig(ngram=5, bands=14, rows=8, threshold=0.8),
        "nemo_20x13": NearDedupConfig(ngram=5, bands=20, rows=13, threshold=0.8),
        "project": project,
    }
    docs = planted_corpus(args.base_docs, variants_per_base=2, seed=0)
    results = {}
    for name, cfg in settings.items():
        sets = [shingles(d.text, cfg.ngram) for d in docs]
        t0 = time.perf_counter()
        truth, sims = brute_force(sets, cfg.threshold)
        brute_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = candidate_pairs(docs, cfg)
        lsh_s = time.perf_counter() - t0
        tp = len(found & truth)
        results[name] = {
            "config": {
                "ngram": cfg.ngram,
                "bands": cfg.bands,
                "rows": cfg.rows,
                "threshold": cfg.threshold,
            },
            "docs": len(docs),
            "true_pairs": len(truth),
            "found_pairs": len(found),
            "precision": tp / len(found) if found else 1.0,
            "recall": tp / len(truth) if truth else 1.0,
            "lsh_docs_per_s": len(docs) / lsh_s,
            "brute_force_docs_per_s": len(docs) / brute_s,
            "pairs_with_jaccard_0.5_to_1": len(sims),
        }
        print(name, json.dumps(results[name]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"results": results, "goals": {"recall": ">= 0.95", "precision": ">= 0.99"}}, indent=2
        )
    )
    if not args.no_mlflow:
        import mlflow

        from components.tracking import mlflow_env

        mlflow_env.configure()
        mlflow.set_experiment("llmops-bench")
        with mlflow.start_run(run_name="dedup_quality"):
            for name, r in results.items():
                mlflow.log_metrics(
                    {f"{name}.{k}": v for k, v in r.items() if isinstance(v, int | float)}
                )
            mlflow.log_artifact(str(out))


if __name__ == "__main__":
    main()
