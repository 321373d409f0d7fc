"""Post-training benchmark: the align stage's methods on the demo SFT model, held-out numbers.

    dvc repro reward                                   # models/sft, models/reward, data/tasks
    python bench/align_methods.py rl --method grpo     # held-out accuracy/reward before/after RL
    python bench/align_methods.py offline --methods dpo ipo kto
    python bench/align_methods.py table                # the Markdown table of the results

Runs `components.training.align.run` itself (the stage's code) with params.yaml's align section
overridden from the command line; nothing is tuned on the held-out prompts (prefs_test): the
settings are fixed before the run and reported with the numbers. MLflow goes to a throw-away
SQLite store; results to bench/results/align_offline.json and align_rl_<method>.json, the table
(held-out implicit-reward accuracy and margin, greedy accuracy overall and per task, token KL to
the SFT model, wall time) to bench/results/align_methods.md.
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
RESULTS = ROOT / "bench/results"
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
    ap.add_argument("mode", choices=["rl", "offline", "table"])
    ap.add_argument("--method", default="grpo")
    ap.add_argument("--methods", nargs="+", default=["dpo", "ipo", "kto"])
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--align", default="{}", help="JSON overrides of the align section")
    args = ap.parse_args()
    if args.mode == "table":
        write_table()
        return
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
    name = "align_offline" if args.mode == "offline" else f"align_rl_{args.method}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    write_table()


def _cell(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def kl_cell(m: dict) -> str:
    """Held-out token KL; older results have only TRL's training KL (marked)."""
    if "heldout_after.kl" in m:
        return _cell(m, "heldout_after.kl")
    return f"{_cell(m, 'train_kl_last')} (train)"


def write_table() -> None:
    """bench/results/align_methods.md from the result JSONs that exist."""
    rows = []
    offline = RESULTS / "align_offline.json"
    tasks: list[str] = []
    if offline.exists():
        m = json.loads(offline.read_text())["metrics"]
        methods = sorted({k.split(".")[1] for k in m if k.startswith("methods.")})
        tasks = sorted({k.rsplit(".", 1)[1] for k in m if ".heldout.accuracy." in k})
        for meth in methods:
            g = {k.split(".", 2)[2]: v for k, v in m.items() if k.startswith(f"methods.{meth}.")}
            rows.append(
                [meth, _cell(g, "test_accuracy"), _cell(g, "test_margin_mean"), ""]
                + [_cell(g, "heldout.accuracy")]
                + [_cell(g, f"heldout.accuracy.{t}") for t in tasks]
                + [_cell(g, "heldout.kl"), _cell(g, "train_runtime_s")]
            )
    for path in sorted(RESULTS.glob("align_rl_*.json")):
        r = json.loads(path.read_text())
        m, meth = r["metrics"], r["align"]["method"]
        for when in ("before", "after"):
            h = {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith(f"heldout_{when}.")}
            rows.append(
                [f"{meth} ({when})", "", "", _cell(h, "reward"), _cell(h, "accuracy")]
                + [_cell(h, f"accuracy.{t}") for t in tasks]
                + [kl_cell(m) if when == "after" else ""]
                + [_cell(m, "train_runtime_s") if when == "after" else ""]
            )
    head = (
        ["method", "pref. acc.", "margin", "verif. reward", "greedy acc."]
        + [f"acc. {t}" for t in tasks]
        + ["KL", "train s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (RESULTS / "align_methods.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
