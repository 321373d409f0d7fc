"""A pairwise judge's verdicts and what they are worth: the vocabulary the judge stage and its
calibration share.

A pair is judged twice, the answer of interest shown first (A) and then second (B). A reply
that names neither A, B nor a tie is *invalid*, never read as a tie; two valid verdicts that
disagree once the order is undone are *inconsistent* (position bias), reported apart from real
ties. `agreement` gives the two rates a judge must keep low to be believed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Verdict = Literal["A", "B", "tie", "invalid"]  # which shown position answered better
Outcome = Literal["win", "tie", "loss", "invalid"]  # for the answer of interest, in one order
PairOutcome = Literal["win", "tie", "loss", "inconsistent", "invalid"]  # both orders combined
OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "loss", "invalid")
PAIR_OUTCOMES: tuple[PairOutcome, ...] = ("win", "tie", "loss", "inconsistent", "invalid")
REPLIES: tuple[Verdict, ...] = ("A", "B", "tie")  # what a judge may answer

_TIE_WORDS = {"tie", "equal", "neither", "same"}


class PairJudge(Protocol):
    name: str

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        """Which of answer A or B to each prompt is better (or a tie, or invalid)."""
        ...


def parse_verdict(text: str | None) -> Verdict:
    """The verdict in a judge's reply, read from its first word; anything else is invalid."""
    words = (text or "").split(maxsplit=1)
    first = words[0].strip(".,:;!*'\"`()[]").casefold() if words else ""
    if first in ("a", "b"):
        return "A" if first == "a" else "B"
    return "tie" if first in _TIE_WORDS else "invalid"


def per_order(v: Verdict, shown_as: Literal["A", "B"]) -> Outcome:
    """The outcome of the answer of interest in one order, given the position it was shown in."""
    if v in ("tie", "invalid"):
        return v
    return "win" if v == shown_as else "loss"


def outcome_of(first: Outcome, second: Outcome) -> PairOutcome:
    """Both orders combined: agreement stands; an invalid reply makes the pair invalid;
    two valid verdicts that disagree are inconsistent (not a tie)."""
    if "invalid" in (first, second):
        return "invalid"
    return first if first == second else "inconsistent"


def both_orders(
    judge: PairJudge, prompts: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> tuple[list[Outcome], list[Outcome]]:
    """Outcomes of `ours` shown first (A), then shown second (B)."""
    first = [per_order(v, "A") for v in judge.judge(prompts, ours, theirs)]
    second = [per_order(v, "B") for v in judge.judge(prompts, theirs, ours)]
    return first, second


@dataclass(frozen=True)
class Agreement:
    n_pairs: int
    invalid_rate: float  # invalid replies / replies asked (two per pair)
    consistency: float  # pairs with two valid verdicts that agree / pairs with two valid ones

    @classmethod
    def of(cls, first: Sequence[Outcome], second: Sequence[Outcome]) -> Agreement:
        n = len(first)
        invalid = sum(o == "invalid" for o in (*first, *second))
        valid = [(a, b) for a, b in zip(first, second, strict=True) if "invalid" not in (a, b)]
        consistent = sum(a == b for a, b in valid)
        return cls(
            n,
            round(invalid / (2 * n), 4) if n else 1.0,
            round(consistent / len(valid), 4) if valid else 0.0,
        )
