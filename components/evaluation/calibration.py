"""A judge proves it can judge before its verdicts count.

Calibration pairs come from the checkable eval split: a prompt, its correct answer, and a wrong
one (the answer to another prompt of the same task that `is_correct` rejects). The judge sees
each pair in both orders; a judge that knows which answer is right picks it both times. An
always-"A" judge is right in one order and wrong in the other (consistency 0), a garbage one
answers nothing valid, a random one is right in both orders a quarter of the time: each falls
below a threshold of `judge.calibration` and the judge is unavailable.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.config import JudgeCalibrationParams
from components.evaluation.answer_check import is_correct
from components.evaluation.verdicts import Agreement, PairJudge, both_orders, outcome_of


@dataclass(frozen=True)
class CalibrationPair:
    id: str
    prompt: str
    right: str
    wrong: str


class CalibrationSetError(ValueError):
    """The eval split cannot give as many calibration pairs as asked."""


def calibration_pairs(
    examples: Sequence[Mapping[str, Any]], n: int, seed: int
) -> list[CalibrationPair]:
    """`n` pairs (correct answer, a wrong answer of the same task), drawn with `seed`."""
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for ex in examples:
        by_task[str(ex["task"])].append(ex)
    rng = random.Random(seed)
    order = list(examples)
    rng.shuffle(order)
    pairs: list[CalibrationPair] = []
    for ex in order:
        right = str(ex["answer"])
        wrong = [str(o["answer"]) for o in by_task[str(ex["task"])]]
        wrong = [w for w in wrong if not is_correct(right, w)]
        if wrong:
            pick = rng.choice(wrong)
            pairs.append(CalibrationPair(str(ex["id"]), str(ex["prompt"]), right, pick))
        if len(pairs) == n:
            return pairs
    raise CalibrationSetError(
        f"judge.calibration.pairs is {n}, but the eval split gives only {len(pairs)} pairs of a "
        "correct and a wrong answer to the same task; lower judge.calibration.pairs or raise "
        "tasks.eval"
    )


@dataclass(frozen=True)
class Calibration:
    accuracy: float  # pairs where the correct answer won in both orders / pairs
    agreement: Agreement

    def problems(self, cfg: JudgeCalibrationParams) -> list[str]:
        """Why the judge is not to be believed (empty: it calibrated)."""
        return [
            *rate_problems(self.agreement, cfg, "calibration"),
            *(
                [f"calibration accuracy {self.accuracy:.3f} < {cfg.min_accuracy:g}"]
                if self.accuracy < cfg.min_accuracy
                else []
            ),
        ]

    def metrics(self) -> dict[str, float | int]:
        return {
            "accuracy": self.accuracy,
            "consistency": self.agreement.consistency,
            "invalid_rate": self.agreement.invalid_rate,
            "n_pairs": self.agreement.n_pairs,
        }


def rate_problems(a: Agreement, cfg: JudgeCalibrationParams, where: str) -> list[str]:
    """The thresholds every set of judged pairs must meet (calibration and comparison)."""
    out = []
    if a.invalid_rate > cfg.max_invalid_rate:
        out.append(f"{where} invalid rate {a.invalid_rate:.3f} > {cfg.max_invalid_rate:g}")
    if a.consistency < cfg.min_consistency:
        out.append(f"{where} consistency {a.consistency:.3f} < {cfg.min_consistency:g}")
    return out


def calibrate(judge: PairJudge, pairs: Sequence[CalibrationPair]) -> Calibration:
    prompts = [p.prompt for p in pairs]
    first, second = both_orders(judge, prompts, [p.right for p in pairs], [p.wrong for p in pairs])
    outcomes = [outcome_of(a, b) for a, b in zip(first, second, strict=True)]
    accuracy = round(sum(o == "win" for o in outcomes) / len(pairs), 4)
    return Calibration(accuracy, Agreement.of(first, second))
