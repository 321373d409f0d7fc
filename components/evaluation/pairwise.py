"""judge stage: the challenger (policy) against the champion, answer by answer, both orders.

1. Baseline: the model version holding the registry alias `champion` of llmops-policy. With no
   champion yet (a first run), or when the challenger already is the champion, the baseline is
   the SFT model (the policy's parent), so the run still shows what alignment changed; the gated
   key `judge_win_rate` is then NOT written (the gate's `if_missing` decides, `skip` in
   params.yaml) because the gate is about beating the champion. The reason is recorded in
   `judge.baseline_reason`.
2. Both models answer every prompt of `data/judge/prompts.jsonl` (greedy, chat template).
3. The judge first calibrates (components/evaluation/calibration.py): eval items with a known
   correct answer against a wrong one. Below `judge.calibration`'s thresholds it is
   unavailable and nothing else is asked of it.
4. It compares each pair twice, challenger shown first (A) and then second (B)
   (components/evaluation/verdicts.py): a reply that is no verdict is invalid, two orders that
   disagree are inconsistent; the comparison must meet the same invalid-rate and consistency
   thresholds, or the judge is unavailable.
5. Win rate = (wins + ties/2 + inconsistent/2) / valid pairs (an inconsistent pair shows no
   preference that survives the order swap), with a bootstrap interval (scipy.stats.bootstrap).

An unavailable judge writes no gated key: the promote gate's `if_missing` decides, never a pass.
A judge that shares training signal with the challenger (the reward model, trained on the same
preference pairs the policy was optimised on; an endpoint declared so) is flagged:
`judge_independent` 0, which the gate's `independence` reads.

Judges:
- `RewardModelJudge` (default, offline): the trained reward model (`llmops-reward`) scores each
  answer in its own conversation and the higher reward wins. Position cannot matter by
  construction (the other answer is never in view), so both orders always agree; they are still
  both computed, through the same interface, and the consistency metric (1.0) says so. Never
  independent of the challenger.
- `EndpointJudge`: any OpenAI-compatible chat endpoint (vLLM, OpenAI, ...) through the `openai`
  client, asked to answer `A`, `B` or `tie`. If it cannot be reached (refused, timed out, an
  HTTP error), no verdict is invented: the judge is unavailable with the reason. With
  `judge.serve: init` the stage serves the model.init checkpoint itself for this run
  (components/evaluation/served_judge.py) and asks it the same way, its reply constrained to a
  verdict.

Why not mlflow.genai scorers (MLflow 3.17): a scorer grades one row (inputs, outputs,
expectations), and its LLM judges (`make_judge`) reach endpoints through litellm (not installed)
or MLflow's gateway HTTP providers, not the `openai` client, and return errors as feedback
values; the pairwise protocol (two orders, consistency, ties) would live outside it anyway.
The verdicts are logged as an MLflow table instead (`judge/verdicts.json`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from mlflow import MlflowClient
from scipy.stats import bootstrap

from components.config import DeployParams, JudgeParams, StageParams
from components.constants import ALIAS_CHAMPION, MODEL_POLICY
from components.evaluation.calibration import calibrate, calibration_pairs, rate_problems
from components.evaluation.eval_set import read_eval_set
from components.evaluation.served_judge import served_judge
from components.evaluation.verdicts import (
    OUTCOMES,
    REPLIES,
    Agreement,
    Outcome,
    PairOutcome,
    Verdict,
    both_orders,
    outcome_of,
    parse_verdict,
)
from components.modeling.generate import Conversation, generate_greedy, user_turns
from components.modeling.io import load_for_inference
from components.registry.champion import current_champion
from components.serving.vllm_server import ServerError
from components.stage import StageResult
from components.tracking import lineage
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

PROMPT_KEYS = ("id", "task", "prompt")
# Written as `judge_<key>` (what promote's gates read) only for a comparison with the champion.
GATED = ("win_rate", "win_rate_ci_low", "win_rate_ci_high", "consistency")
# Points of the challenger per valid pair; invalid pairs are left out of the win rate.
POINTS: dict[PairOutcome, float] = {"win": 1.0, "tie": 0.5, "inconsistent": 0.5, "loss": 0.0}


class Reads(StageParams):
    seed: int
    judge: JudgeParams
    deploy: DeployParams  # how a served judge (judge.serve) is served


@dataclass(frozen=True)
class Paths:
    policy: Path  # the challenger
    sft: Path  # baseline when there is no other champion
    reward: Path  # the reward model (default judge)
    init: Path  # the model.init checkpoint (the judge with judge.serve: init)
    prompts: Path  # JSONL: id, task, prompt
    eval_set: Path  # JSONL: id, task, prompt, answer (the judge's calibration pairs)
    verdicts: Path  # JSONL: one line per prompt (answers, both verdicts, outcome)
    plot: Path  # PNG: the judge matrix
    metrics: Path


class JudgeUnavailable(RuntimeError):
    """The judge could not be asked: its verdicts are missing, never assumed."""


class RewardModelJudge:
    """The reward model as a judge: each answer scored alone, the higher reward wins."""

    name = "reward_model"
    # Trained on the preference pairs the policy was optimised on (and usable as its RL reward).
    shares_training = True

    def __init__(self, reward_dir: Path, max_length: int, batch_size: int):
        from components.modeling.scoring import score  # torch only for this judge

        self._score = score
        self.model, self.tokenizer = load_for_inference(reward_dir)
        self.max_length, self.batch_size = max_length, batch_size

    def rewards(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        conversations: list[Conversation] = [
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
            for p, a in zip(prompts, answers, strict=True)
        ]
        return self._score(
            self.model, self.tokenizer, conversations, self.max_length, self.batch_size
        )

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        ra, rb = self.rewards(prompts, a), self.rewards(prompts, b)
        return [_higher(x, y) for x, y in zip(ra, rb, strict=True)]


def _higher(x: float, y: float) -> Verdict:
    return "A" if x > y else "B" if y > x else "tie"


JUDGE_INSTRUCTIONS = (
    "You compare two answers to the same user prompt. Reply with exactly one token: "
    "A if answer A is better, B if answer B is better, tie if neither is better. "
    "Judge correctness first, then helpfulness and harmlessness."
)


class EndpointJudge:
    """An OpenAI-compatible chat endpoint as a judge (the `openai` client, greedy)."""

    def __init__(self, cfg: JudgeParams, api_key: str | None = None):
        from openai import OpenAI

        assert cfg.endpoint is not None  # validated by JudgeParams
        self.endpoint, self.model = cfg.endpoint, cfg.model
        self.name = f"endpoint:{cfg.model}"
        self.shares_training = cfg.endpoint_shares_training
        # vLLM's structured outputs: the reply is one of the verdicts, nothing else.
        choice = {"structured_outputs": {"choice": list(REPLIES)}}
        self.extra_body = choice if cfg.constrained else None
        # One retry at most: a down judge should cost seconds, not the client's default backoff.
        self.client = OpenAI(
            base_url=cfg.endpoint,
            api_key=api_key or os.environ.get(cfg.api_key_env) or "EMPTY",
            timeout=cfg.timeout_s,
            max_retries=1,
        )

    def ask(self, prompt: str, a: str, b: str) -> Verdict:
        import openai

        content = f"Prompt:\n{prompt}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nBetter answer:"
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": JUDGE_INSTRUCTIONS},
                    {"role": "user", "content": content},
                ],
                max_tokens=4,
                temperature=0.0,
                extra_body=self.extra_body,
            )
        except openai.APIError as err:  # refused, timed out, HTTP error, malformed reply
            raise JudgeUnavailable(
                f"judge endpoint {self.endpoint} (model {self.model!r}) did not answer: "
                f"{type(err).__name__}: {err}. The judge metrics are reported missing; check "
                "judge.endpoint / judge.model in params.yaml or set judge.endpoint: null to "
                "judge with the reward model"
            ) from err
        return parse_verdict(reply.choices[0].message.content if reply.choices else None)

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        return [self.ask(p, x, y) for p, x, y in zip(prompts, a, b, strict=True)]


def make_judge(
    cfg: JudgeParams, reward_dir: Path, api_key: str | None = None
) -> EndpointJudge | RewardModelJudge:
    if cfg.endpoint:
        return EndpointJudge(cfg, api_key)
    return RewardModelJudge(reward_dir, cfg.reward_max_length, cfg.batch_size)


# ---------------------------------------------------------------- verdicts -> numbers


def win_rate_interval(
    outcomes: Sequence[PairOutcome], confidence: float, resamples: int, seed: int
) -> tuple[float, float, float]:
    """(win rate, low, high): mean points of the valid pairs (POINTS) and a percentile bootstrap
    interval over prompts (percentile, not BCa: BCa is undefined when all outcomes agree)."""
    points = np.array([POINTS[o] for o in outcomes if o != "invalid"], dtype=float)
    if len(points) == 0:
        raise ValueError("no valid verdict: a win rate needs at least one")
    rate = float(points.mean())
    if len(points) < 2 or np.all(points == points[0]):
        return rate, rate, rate  # no spread to resample
    ci = bootstrap(
        (points,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return rate, float(ci.low), float(ci.high)


def judge_matrix(first: Sequence[Outcome], second: Sequence[Outcome]) -> np.ndarray:
    """(4, 4) counts: rows the challenger's outcome shown first, columns shown second
    (win, tie, loss, invalid). Off the diagonal a valid pair is inconsistent."""
    n = len(OUTCOMES)
    m = np.zeros((n, n), dtype=int)
    for a, b in zip(first, second, strict=True):
        m[OUTCOMES.index(a), OUTCOMES.index(b)] += 1
    return m


def render_matrix(matrix: np.ndarray | None, title: str, path: Path) -> None:
    fig = Figure(figsize=(4.6, 4))
    ax = fig.subplots()
    if matrix is None:
        ax.text(0.5, 0.5, "judge unavailable:\nno verdicts", ha="center", va="center")
        ax.set_axis_off()
    else:
        ax.imshow(matrix, cmap="Blues")
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=12)
        ax.set_xticks(range(len(OUTCOMES)), OUTCOMES)
        ax.set_yticks(range(len(OUTCOMES)), OUTCOMES)
        ax.set_xlabel("challenger's outcome, shown second (B)")
        ax.set_ylabel("shown first (A)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def summarize(
    first: Sequence[Outcome], second: Sequence[Outcome], cfg: JudgeParams, seed: int
) -> dict[str, Any]:
    """Counts and rates of a comparison; the win rate only when some pair is valid."""
    outcomes = [outcome_of(a, b) for a, b in zip(first, second, strict=True)]
    counts = Counter(outcomes)
    agreement = Agreement.of(first, second)
    out: dict[str, Any] = {
        "consistency": agreement.consistency,
        "invalid_rate": agreement.invalid_rate,
        "wins": counts["win"],
        "ties": counts["tie"],
        "losses": counts["loss"],
        "inconsistent": counts["inconsistent"],
        "invalid": counts["invalid"],
        "n_pairs": len(outcomes),
    }
    if counts["invalid"] < len(outcomes):
        rate, low, high = win_rate_interval(outcomes, cfg.confidence, cfg.bootstrap_resamples, seed)
        out.update(win_rate=round(rate, 4), win_rate_ci_low=round(low, 4))
        out["win_rate_ci_high"] = round(high, 4)
    return out


# ---------------------------------------------------------------- the stage


@dataclass(frozen=True)
class Baseline:
    label: str  # "champion" | "sft"
    version: str  # registry version of the champion; "" for the SFT directory
    reason: str


def choose_baseline(client: MlflowClient, policy: Path) -> Baseline:
    """The champion unless there is none or it is the challenger itself (then the SFT model).

    An unreadable registry raises (RegistryUnavailable), as in promote: a judge against the
    wrong baseline would be worse than none."""
    challenger = lineage.parent_model(policy).rsplit("/", 1)[1]
    champ = current_champion(client, MODEL_POLICY)
    if champ is None:
        return Baseline("sft", "", f"no {ALIAS_CHAMPION} of {MODEL_POLICY} yet: judged vs SFT")
    if str(champ.version) == challenger:
        return Baseline(
            "sft", "", f"the challenger (version {challenger}) already is {ALIAS_CHAMPION}"
        )
    return Baseline("champion", str(champ.version), f"{ALIAS_CHAMPION} is version {champ.version}")


def answers_of(model_dir: Path, prompts: Sequence[str], cfg: JudgeParams) -> list[str]:
    model, tokenizer = load_for_inference(model_dir)
    return generate_greedy(
        model, tokenizer, user_turns(prompts), cfg.max_new_tokens, cfg.batch_size
    )


def baseline_answers(
    baseline: Baseline, sft: Path, prompts: Sequence[str], cfg: JudgeParams
) -> list[str]:
    if baseline.label == "sft":
        return answers_of(sft, prompts, cfg)
    from components.tracking.model_download import download_model

    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        hf_dir = download_model(f"models:/{MODEL_POLICY}/{baseline.version}", Path(tmp))
        return answers_of(hf_dir, prompts, cfg)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def judge_identity(judge: EndpointJudge | RewardModelJudge) -> dict[str, Any]:
    shares = judge.shares_training
    why = (
        "trained on the preference pairs the policy was optimised on"
        if isinstance(judge, RewardModelJudge)
        else "declared so (judge.endpoint_shares_training)"
        if shares
        else "shares no declared training signal with the challenger"
    )
    return {"judge.independent": int(not shares), "judge.independence": why}


def _unavailable(
    metrics: dict[str, Any], why: str, rows: list[dict[str, Any]], paths: Paths, tracker: Tracker
) -> StageResult:
    log.warning("judge unavailable: %s", why)
    metrics.update({"judge.available": 0, "judge.error": why[:500]})
    _write_jsonl(paths.verdicts, rows)
    if not paths.plot.exists():
        render_matrix(None, f"challenger vs {metrics['judge.baseline']}", paths.plot)
    for artifact in (paths.verdicts, paths.plot):
        tracker.log_artifact(artifact, "judge")
    return StageResult(metrics=metrics)


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.judge
    items = read_eval_set(paths.prompts, cfg.max_prompts, keys=PROMPT_KEYS)
    prompts = [str(ex["prompt"]) for ex in items]
    # Before any model is loaded: a calibration set the eval split cannot give fails here.
    pairs = calibration_pairs(read_eval_set(paths.eval_set), cfg.calibration.pairs, params.seed)
    baseline = choose_baseline(MlflowClient(), paths.policy)
    log.info("judge baseline: %s (%s)", baseline.label, baseline.reason)
    paths.plot.unlink(missing_ok=True)  # a stale matrix must not stand for this run

    metrics: dict[str, Any] = {
        "judge.baseline": baseline.label,
        "judge.baseline_version": baseline.version,
        "judge.baseline_reason": baseline.reason,
        "judge.judge": (
            f"served:{cfg.serve}"
            if cfg.serve
            else f"endpoint:{cfg.model}"
            if cfg.endpoint
            else RewardModelJudge.name
        ),
        **{f"judge.threshold.{k}": v for k, v in cfg.calibration.model_dump().items()},
    }
    rows: list[dict[str, Any]] = [
        {"id": ex["id"], "task": ex["task"], "prompt": str(ex["prompt"])} for ex in items
    ]
    try:
        # judge.serve: the judge's own vLLM server, up for the calibration and the comparison.
        log_path = paths.verdicts.with_suffix(".server.log")
        with served_judge(cfg, params.deploy, paths.init, log_path) as endpoint:
            judge = make_judge(endpoint.cfg, paths.reward, endpoint.api_key)
            metrics.update(judge_identity(judge))
            calibration = calibrate(judge, pairs)
            metrics.update({f"judge.calibration.{k}": v for k, v in calibration.metrics().items()})
            if problems := calibration.problems(cfg.calibration):
                raise JudgeUnavailable("; ".join(problems))
            ours = answers_of(paths.policy, prompts, cfg)
            theirs = baseline_answers(baseline, paths.sft, prompts, cfg)
            for row, a, b in zip(rows, ours, theirs, strict=True):
                row.update(challenger=a, baseline=b)
            first, second = both_orders(judge, prompts, ours, theirs)
    except ServerError as err:
        why = f"the judge server did not start: {err}"
        return _unavailable(metrics, why, rows, paths, tracker)
    except JudgeUnavailable as err:
        return _unavailable(metrics, str(err), rows, paths, tracker)

    summary = summarize(first, second, cfg, params.seed)
    metrics.update({f"judge.{k}": v for k, v in summary.items()})
    for row, a, b in zip(rows, first, second, strict=True):
        row.update(shown_first=a, shown_second=b, outcome=outcome_of(a, b))
    rate = (
        f"win rate {summary['win_rate']:.2f} [{summary['win_rate_ci_low']:.2f}, "
        f"{summary['win_rate_ci_high']:.2f}]"
        if "win_rate" in summary
        else "no valid verdict"
    )
    title = f"challenger vs {baseline.label} ({metrics['judge.judge']}): {rate}"
    render_matrix(judge_matrix(first, second), title, paths.plot)
    problems = rate_problems(Agreement.of(first, second), cfg.calibration, "comparison")
    if problems:
        return _unavailable(metrics, "; ".join(problems), rows, paths, tracker)

    metrics["judge.available"] = 1
    if baseline.label == "champion":  # the gated keys: only a comparison with the champion
        metrics.update({f"judge_{k}": summary[k] for k in GATED})
        metrics["judge_independent"] = metrics["judge.independent"]
    _write_jsonl(paths.verdicts, rows)
    for artifact in (paths.verdicts, paths.plot):
        tracker.log_artifact(artifact, "judge")
    log.info("judge: %s", title)
    return StageResult(metrics=metrics)
