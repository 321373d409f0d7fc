"""The results: ratios of the two sides, the JSON file, the table on stdout, MLflow metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MEASURE = (
    "docs_per_s = documents / CPU seconds of this single process pinned to one core (= docs/s "
    "per core); *_wall from wall-clock seconds. blocks: each block alone over all corpus "
    "documents; whole and common_chain: chains where a block sees what survived the blocks "
    "before it."
)


def ratios(ours: dict, dt: dict) -> dict[str, float]:
    """Ours / DataTrove in documents per CPU second (above 1: ours is faster)."""
    both = [n for n in dt["blocks"] if n in ours["blocks"]]
    out = {
        n: round(ours["blocks"][n]["docs_per_s"] / dt["blocks"][n]["docs_per_s"], 3) for n in both
    }
    chain, their_chain = ours["common_chain"], dt["whole"]
    out["whole_chain"] = round(chain["docs_per_s_per_core"] / their_chain["docs_per_s_per_core"], 3)
    out["whole_chain_wall"] = round(chain["docs_per_s_wall"] / their_chain["docs_per_s_wall"], 3)
    # Equal work per side: every common block over every document, times added up (the chains
    # differ in what survives to the later blocks).
    out["common_blocks_summed"] = round(
        sum(dt["blocks"][n]["cpu_seconds"] for n in both)
        / sum(ours["blocks"][n]["cpu_seconds"] for n in both),
        3,
    )
    # Ours does more here (toxicity, quality model): a lower bound on the like-for-like ratio.
    out["refinery_vs_datatrove_chain"] = round(
        ours["whole"]["docs_per_s_per_core"] / their_chain["docs_per_s_per_core"], 3
    )
    return out


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def print_table(result: dict[str, Any]) -> None:
    ours, dt, r = result["ours"]["blocks"], result["datatrove"]["blocks"], result["ratios"]
    print(f"\n{'block':<20}{'ours docs/s':>14}{'DataTrove':>12}{'ratio':>8}")
    for name in dict.fromkeys([*ours, *dt]):
        a, b = ours.get(name, {}).get("docs_per_s"), dt.get(name, {}).get("docs_per_s")
        print(f"{name:<20}{a or '-':>14}{b or '-':>12}{r.get(name, '-'):>8}")
    print(
        f"{'common chain':<20}{result['ours']['common_chain']['docs_per_s_per_core']:>14}"
        f"{result['datatrove']['whole']['docs_per_s_per_core']:>12}{r['whole_chain']:>8}"
    )
    print(f"{'refine() (all)':<20}{result['ours']['whole']['docs_per_s_per_core']:>14}")
    print(f"common blocks, each over all docs, times summed: ratio {r['common_blocks_summed']}")


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    m: dict[str, float] = {
        "corpus.docs": result["corpus"]["docs"],
        "corpus.mib": result["corpus"]["mib"],
        "cpu_count": result["cpu_count"],
    }
    for side in ("ours", "datatrove"):
        for part in ("whole", "common_chain"):
            if part in result[side]:
                m[f"{side}.{part}.docs_per_s_per_core"] = result[side][part]["docs_per_s_per_core"]
        for name, b in result[side]["blocks"].items():
            m[f"{side}.{name}.docs_per_s"] = b["docs_per_s"]
    m.update({f"ratio.{k}": v for k, v in result["ratios"].items()})
    return m


def log_to_mlflow(result: dict[str, Any], out: Path) -> None:
    import mlflow

    from components.tracking import mlflow_env

    mlflow_env.configure()
    mlflow.set_experiment("llmops-bench")
    with mlflow.start_run(run_name="curation"):
        mlflow.log_metrics(flat_metrics(result))
        mlflow.log_artifact(str(out))
