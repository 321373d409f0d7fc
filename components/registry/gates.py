"""One promotion gate: a challenger's metric against its threshold or the champion's value.

The promote stage applies `promote.gates` with it (offline, on evaluation metrics); the canary
applies `deploy.canary.gates()` with it (live, on the numbers served traffic gave).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from components.config import GateRule
from components.constants import EVAL_TAG_PREFIX
from components.evaluation.significance import PairedTest

Status = Literal["pass", "fail", "skip"]
PairedEvidence = PairedTest | str  # the test, or why there is none


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    against: str
    status: Status
    value: float | None  # the challenger's
    bound: float | None  # what it was compared with (threshold, or champion ± margin)
    champion: float | None
    reason: str
    paired: dict[str, Any] | None = None  # the paired test's record (test: mcnemar)


def _missing(name: str, metric: str, rule: GateRule, what: str, **kw: Any) -> GateResult:
    status: Status = "skip" if rule.if_missing == "skip" else "fail"
    return GateResult(
        name, metric, rule.against, status, reason=f"{what} (if_missing={status})", **kw
    )


def independent_only(
    result: GateResult, rule: GateRule, challenger: dict[str, float]
) -> GateResult:
    """A pass on evidence that shares training signal with the challenger (`independence`
    not 1) is not evidence on its own: reported skipped. A fail stands."""
    if result.status != "pass" or rule.independence is None:
        return result
    if challenger.get(rule.independence) == 1:
        return result
    return dataclasses.replace(
        result,
        status="skip",
        reason=f"{result.reason}, but not independent of the challenger's training "
        f"({rule.independence}={challenger.get(rule.independence)}): not evidence on its own",
    )


def check_gate(
    name: str,
    metric: str,
    rule: GateRule,
    min_delta: float,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    paired: PairedEvidence | None = None,
) -> GateResult:
    """One gate on the challenger's value, against its threshold or the champion's value
    (and, with `test: mcnemar`, the paired test on the same items)."""
    key = rule.bound or metric
    value = challenger.get(key)
    if value is None:
        return _missing(
            name, metric, rule, f"challenger has no {key}", value=None, bound=None, champion=None
        )
    higher = rule.better == "higher"
    if rule.against == "absolute":
        bound, old = float(rule.threshold), None  # validated: absolute gates have one
        ok = value >= bound if higher else value <= bound
        op = (">=" if higher else "<=") if ok else ("<" if higher else ">")
        reason = f"{key}={value:.4g} {op} {bound:.4g}"
    else:
        if champion is None:
            return GateResult(
                name, metric, rule.against, "skip", value, None, None, "no champion to compare"
            )
        old = champion.get(metric)
        if old is None:
            return _missing(
                name,
                metric,
                rule,
                f"champion has no recorded {metric} (tag {EVAL_TAG_PREFIX}{metric})",
                value=value,
                bound=None,
                champion=None,
            )
        margin = min_delta if rule.threshold is None else rule.threshold
        bound = old + margin if higher else old - margin
        ok = value > bound if higher else value < bound  # strict: a tie keeps the champion
        op = (">" if higher else "<") if ok else ("<=" if higher else ">=")
        shift = bound - old  # a tolerated regression reads "champion 0.2 + 0.5", not "- -0.5"
        reason = f"{metric}={value:.4g} {op} champion {old:.4g} {'-' if shift < 0 else '+'} "
        reason += f"{abs(shift):g}"
        if rule.test == "mcnemar":
            return _paired_gate(name, metric, rule, value, bound, old, ok, reason, paired)
    return GateResult(
        name, metric, rule.against, "pass" if ok else "fail", value, bound, old, reason
    )


def _paired_gate(
    name: str,
    metric: str,
    rule: GateRule,
    value: float,
    bound: float,
    old: float,
    beyond_margin: bool,
    reason: str,
    paired: PairedEvidence | None,
) -> GateResult:
    """The margin on the recorded values and a significant paired gain on the same items."""
    if not isinstance(paired, PairedTest):
        why = paired or f"no per-item results of {metric}"
        return _missing(
            name, metric, rule, f"{why}: no paired test", value=value, bound=bound, champion=old
        )
    wanted = "better" if rule.better == "higher" else "worse"
    significant = paired.direction == wanted
    ok = beyond_margin and significant
    verdict = "significant" if significant else "not significant"
    return GateResult(
        name,
        metric,
        rule.against,
        "pass" if ok else "fail",
        value,
        bound,
        old,
        f"{reason}; {paired.describe()}: {verdict}",
        paired.record(),
    )
