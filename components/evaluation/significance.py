"""Whether one model is shown to be better than another on the same items, and whether two
signals (task accuracy, a pairwise judge) point the same way.

Accuracy: exact McNemar on per-item correctness. Only the discordant items carry information
(right for one model, wrong for the other); under "no difference" each is equally likely to
favour either model, so the count of challenger gains among them is Binomial(b + c, 1/2)
(scipy.stats.binomtest, one-sided each way). Judge: its win-rate interval against 1/2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from scipy.stats import binomtest

from components.config import min_paired_items
from components.constants import EVAL_CHALLENGER

# Metrics with per-item results, and the field of reports/predictions.jsonl that holds them
# (one row per model and eval item; the same items for every model evaluated).
PER_ITEM = {"eval_accuracy": "correct"}
Direction = Literal["better", "worse", "none"]  # the challenger's, at the confidence asked
TEST_NAME = "mcnemar_exact"


class TooFewItems(ValueError):
    """No paired test at this confidence can show a difference on so few items."""


@dataclass(frozen=True)
class PairedTest:
    test: str
    n: int  # items scored for both models
    gains: int  # challenger right, champion wrong
    losses: int  # champion right, challenger wrong
    delta: float  # (gains - losses) / n: the accuracy difference on these items
    p_better: float  # one-sided p-value of "challenger better"
    p_worse: float  # one-sided p-value of "challenger worse"
    confidence: float

    @property
    def direction(self) -> Direction:
        alpha = 1.0 - self.confidence
        return "better" if self.p_better < alpha else "worse" if self.p_worse < alpha else "none"

    def describe(self) -> str:
        return (
            f"{self.test} on {self.n} paired items: +{self.gains} -{self.losses}, delta "
            f"{self.delta:+.3f}, p(better)={self.p_better:.3g}, p(worse)={self.p_worse:.3g} "
            f"at confidence {self.confidence:g}"
        )

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "direction": self.direction}


def mcnemar(
    challenger: Mapping[str, bool], champion: Mapping[str, bool], confidence: float
) -> PairedTest:
    """The paired test on the items both were scored on (matched by item id)."""
    ids = sorted(set(challenger) & set(champion))
    if len(ids) < min_paired_items(confidence):
        raise TooFewItems(
            f"{len(ids)} items scored for both models (challenger {len(challenger)}, champion "
            f"{len(champion)}); a paired test at confidence {confidence:g} needs at least "
            f"{min_paired_items(confidence)}"
        )
    gains = sum(challenger[i] and not champion[i] for i in ids)
    losses = sum(champion[i] and not challenger[i] for i in ids)
    discordant = gains + losses
    p_better = binomtest(gains, discordant, 0.5, alternative="greater").pvalue if discordant else 1
    p_worse = binomtest(losses, discordant, 0.5, alternative="greater").pvalue if discordant else 1
    return PairedTest(
        TEST_NAME,
        len(ids),
        gains,
        losses,
        round((gains - losses) / len(ids), 4),
        float(p_better),
        float(p_worse),
        confidence,
    )


def per_item(predictions: Path, model: str = EVAL_CHALLENGER) -> dict[str, dict[str, bool]]:
    """{metric: {item id: result}} of one model, from the evaluate stage's predictions."""
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    mine = [r for r in rows if r["model"] == model]
    if not mine:
        raise ValueError(f"{predictions} holds no rows of model {model!r}: re-run evaluate")
    return {m: {str(r["id"]): bool(r[field]) for r in mine} for m, field in PER_ITEM.items()}


def interval_direction(low: float, high: float, null: float = 0.5) -> Direction:
    """Where an interval of a win rate lies with respect to no preference."""
    return "better" if low > null else "worse" if high < null else "none"


def disagreement(accuracy: Direction, judge: Direction) -> bool:
    """Accuracy and the judge each shown a direction, and opposite ones."""
    return {accuracy, judge} == {"better", "worse"}
