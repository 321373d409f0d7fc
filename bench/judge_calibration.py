"""Calibration scores of candidate judges, the way the judge stage calibrates them.

    PYTHONPATH=. python bench/judge_calibration.py --eval-set data/tasks/eval.jsonl \
        [--endpoint NAME=URL@MODEL ...] [--reward NAME=DIR ...] [--always-a] [--pairs 16]

Each judge answers the same `--pairs` calibration pairs of the eval split (correct answer vs a
wrong answer of the same task, both orders; components/evaluation/calibration.py): accuracy,
consistency, invalid rate, the thresholds of params.yaml's `judge.calibration`, and whether the
judge stage would count it. `--always-a` adds a local endpoint that answers "A" to everything
(the broken judge the thresholds must refuse). Results: bench/results/judge_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _named(spec: str) -> tuple[str, str]:
    name, _, rest = spec.partition("=")
    if not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {spec!r}")
    return name, rest


def main() -> None:
    from components.config import load_params
    from components.evaluation import pairwise
    from components.evaluation.calibration import calibrate, calibration_pairs
    from components.evaluation.eval_set import read_eval_set

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-set", type=Path, required=True)
    ap.add_argument("--endpoint", type=_named, action="append", default=[])  # NAME=URL@MODEL
    ap.add_argument("--reward", type=_named, action="append", default=[])  # NAME=DIR
    ap.add_argument("--always-a", action="store_true")
    ap.add_argument("--pairs", type=int, default=None)
    out = ROOT / "bench" / "results" / "judge_calibration.json"
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    thresholds = params.judge.calibration
    n = args.pairs or thresholds.pairs
    pairs = calibration_pairs(read_eval_set(args.eval_set), n, params.seed)

    judges: dict[str, object] = {}
    for name, target in args.endpoint:
        url, _, model = target.partition("@")
        cfg = params.judge.model_copy(update={"endpoint": url, "model": model})
        judges[name] = pairwise.EndpointJudge(cfg)
    for name, directory in args.reward:
        judges[name] = pairwise.RewardModelJudge(
            Path(directory), params.judge.reward_max_length, params.judge.batch_size
        )

    results = {}
    with _always_a(args.always_a) as url:
        if url:
            cfg = params.judge.model_copy(update={"endpoint": url, "model": "always-a"})
            judges["always_a"] = pairwise.EndpointJudge(cfg)
        for name, judge in judges.items():
            start = time.monotonic()
            result = calibrate(judge, pairs)
            results[name] = {
                **result.metrics(),
                "problems": result.problems(thresholds),
                "counts": not result.problems(thresholds),
                "seconds": round(time.monotonic() - start, 2),
            }
            print(name, json.dumps(results[name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"pairs": n, "thresholds": thresholds.model_dump(), "judges": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def _always_a(enabled: bool):
    """The tests' OpenAI-shaped endpoint answering "A" to every request (or nothing)."""
    import contextlib

    from tests.components.evaluation.judge_server import judge_endpoint

    return judge_endpoint(lambda prompt, a, b: "A") if enabled else contextlib.nullcontext()


if __name__ == "__main__":
    main()
