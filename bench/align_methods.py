"""Post-training benchmark: the align stage's methods on the demo SFT model, held-out numbers.

    dvc repro reward                                   # models/sft, models/reward, data/tasks
    python bench/align_methods.py rl --method grpo     # held-out accuracy/reward before/after RL
    python bench/align_methods.py offline --methods dpo ipo kto

Runs `components.training.align.run` itself (the stage's code) with params.yaml's align section
overridden from the command line; nothing is tuned on the held-out prompts (prefs_test): the
settings are fixed before the run and reported with the numbers. MLflow goes to a throw-away
SQLite store; results to bench/results/align_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.config import load_params, parse_params  # noqa: E402
from components.stage import stage_reads  # noqa: E402
from components.tracking.stage_run import stage_run  # noqa: E402
from components.training import align  # noqa: E402


def overridden(align_over: dict) -> object:
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json")
    raw["align"] = {
        **raw["align"],
        **align_over,
        "rl": {**raw["align"]["rl"], **align_over.get("rl", {})},
    }
    return parse_params(raw, source="bench overrides")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["rl", "offline"])
    ap.add_argument("--method", default="grpo")
    ap.add_argument("--methods", nargs="+", default=["dpo", "ipo", "kto"])
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--align", default="{}", help="JSON overrides of the align section")
    args = ap.parse_args()
    over = json.loads(args.align)
    over["max_examples"] = args.max_examples
    if args.mode == "rl":
        over["method"] = args.method
    else:
        over["method"], over["compare"] = args.methods[0], args.methods[1:]
    params = overridden(over)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        paths = align.Paths(
            sft=ROOT / "models/sft",
            reward=ROOT / "models/reward",
            train=ROOT / "data/tasks/prefs_train.jsonl",
            test=ROOT / "data/tasks/prefs_test.jsonl",
            out=Path(tmp) / "policy",
            metrics=Path(tmp) / "align.json",
        )
        start = time.perf_counter()
        with stage_run("align", stage_reads("align").narrow(params)) as tracker:
            metrics = align.run(tracker.params, paths, tracker).metrics
    result = {
        "align": params.align.model_dump(mode="json"),
        "wall_s": round(time.perf_counter() - start, 1),
        "metrics": metrics,
    }
    out = ROOT / "bench/results" / f"align_{args.mode}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
